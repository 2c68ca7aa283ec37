/* SPDX-License-Identifier: Apache-2.0
 * Compiled types that are, at runtime, the OpenTracing API classes they implement.
 *
 * Span, SpanContext and Scope are static extension types: a compiled class cannot
 * inherit from a Python class, and a Python subclass of one was measured at ~50 ns a
 * span (a heap type loses the freelist and pays subtype_dealloc).  Instrumentation
 * checks `isinstance(span, opentracing.Span)`, weak-references spans and keeps its own
 * attributes on them, so ft_type_adopt() gives each type, once at import:
 *
 *  - the API class and its bases in its MRO.  isinstance() and issubclass() read
 *    tp_mro, so they answer True.  Attribute lookup walks it too: the compiled class
 *    defines every public method of the API class, and shadows its `__dict__`
 *    descriptor with the one below.  The API classes are plain Python classes with no
 *    C layout, so nothing reads the instance as one.
 *  - an instance dict at tp_dictoffset, made on first use and visited by the garbage
 *    collector, so attributes that point back at their span form collectable cycles.
 *
 * "No dict yet" is NULL, except on CPython 3.11 for spans: 3.11 specialises a method
 * call on an object with a tp_dictoffset only when the dict exists (3.12 only when it
 * does not), and an unspecialised call costs ~95 instructions -- three a span.  So a
 * 3.11 span starts out pointing at one shared empty dict, which is never written:
 * every way to the dict (the `__dict__` descriptor, tp_setattro) replaces it with a
 * dict of the span's own first.  (`object.__setattr__` on these types is refused by
 * CPython itself, because their tp_setattro is not the generic one.)
 *
 * The weak-reference list is an ordinary Cython `__weakref__` field.
 */
#ifndef FT_PYTYPE_H
#define FT_PYTYPE_H
#include <Python.h>

#define FT_MAX_ADOPTED 4

typedef struct {
    PyTypeObject *type;
    traverseproc traverse;      /* the compiled type's own slots */
    destructor dealloc;
    setattrofunc setattro;
    void (*before_dealloc)(PyObject *);     /* the compiled type's own, or NULL */
    int gc;
} ft_adopted_t;

/* Per extension module (each includes its own copy): the types it adopted. */
static ft_adopted_t ft_adopted[FT_MAX_ADOPTED];
static int ft_n_adopted = 0;
static PyObject *ft_shared_empty_dict = NULL;

static inline ft_adopted_t *ft_adopted_of(PyTypeObject *t) {
    for (int i = 0; i < ft_n_adopted; i++) {
        if (ft_adopted[i].type == t) return &ft_adopted[i];
    }
    return NULL;    /* unreachable: the slots below are only installed on adopted types */
}

static inline PyObject **ft_instance_dict_ptr(PyObject *o) {
    return (PyObject **)((char *)o + Py_TYPE(o)->tp_dictoffset);
}

/* The instance's own dict, made (or unshared) now; a borrowed reference, NULL on error. */
static inline PyObject *ft_own_instance_dict(PyObject *o) {
    PyObject **p = ft_instance_dict_ptr(o);
    if (*p == NULL || *p == ft_shared_empty_dict) {
        PyObject *d = PyDict_New(), *old = *p;
        if (d == NULL) return NULL;
        *p = d;
        Py_XDECREF(old);
    }
    return *p;
}

/* Called on each new instance of a type whose method calls are hot (spans), in the
 * module that adopted the type (the shared empty dict is per module). */
static inline void ft_instance_dict_init(PyObject *o) {
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
    PyObject **p = ft_instance_dict_ptr(o);
    Py_INCREF(ft_shared_empty_dict);
    *p = ft_shared_empty_dict;
#else
    (void)o;
#endif
}

static inline int ft_adopted_traverse(PyObject *o, visitproc visit, void *arg) {
    ft_adopted_t *a = ft_adopted_of(Py_TYPE(o));
    Py_VISIT(*ft_instance_dict_ptr(o));
    return (a && a->traverse) ? a->traverse(o, visit, arg) : 0;
}

/* tp_dealloc of adopted type number I: the dict goes first, as in subtype_dealloc,
 * after everything that could see the object again once code runs (the collector,
 * weak reference callbacks, the attributes' own finalizers). */
#define FT_ADOPTED_DEALLOC(I)                                                         \
    static inline void ft_adopted_dealloc_##I(PyObject *o) {                                 \
        PyObject **p = ft_instance_dict_ptr(o);                                       \
        if (ft_adopted[I].before_dealloc != NULL) ft_adopted[I].before_dealloc(o);    \
        if (*p == ft_shared_empty_dict) {                                             \
            Py_DECREF(*p);  /* never the last reference: runs no code */               \
            *p = NULL;                                                                \
        } else if (*p != NULL) {                                                      \
            PyObject **weaklist = (PyObject **)((char *)o + Py_TYPE(o)->tp_weaklistoffset); \
            if (ft_adopted[I].gc) PyObject_GC_UnTrack(o);                             \
            if (*weaklist != NULL) PyObject_ClearWeakRefs(o);                         \
            Py_CLEAR(*p);                                                             \
        }                                                                             \
        ft_adopted[I].dealloc(o);                                                     \
    }
FT_ADOPTED_DEALLOC(0)
FT_ADOPTED_DEALLOC(1)
FT_ADOPTED_DEALLOC(2)
FT_ADOPTED_DEALLOC(3)
static const destructor ft_adopted_deallocs[FT_MAX_ADOPTED] = {
    ft_adopted_dealloc_0, ft_adopted_dealloc_1, ft_adopted_dealloc_2, ft_adopted_dealloc_3};

static inline int ft_adopted_setattro(PyObject *o, PyObject *name, PyObject *value) {
    ft_adopted_t *a = ft_adopted_of(Py_TYPE(o));
    if (*ft_instance_dict_ptr(o) == ft_shared_empty_dict && ft_own_instance_dict(o) == NULL)
        return -1;
    return a->setattro(o, name, value);
}

static inline PyObject *ft_get_instance_dict(PyObject *o, void *closure) {
    PyObject *d = ft_own_instance_dict(o);
    (void)closure;
    Py_XINCREF(d);
    return d;
}

static inline int ft_set_instance_dict(PyObject *o, PyObject *value, void *closure) {
    PyObject **p = ft_instance_dict_ptr(o), *old = *p;
    (void)closure;
    if (value == NULL || !PyDict_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "__dict__ must be set to a dict");
        return -1;
    }
    Py_INCREF(value);
    *p = value;
    Py_XDECREF(old);
    return 0;
}

static PyGetSetDef ft_instance_dict_getset = {
    "__dict__", ft_get_instance_dict, ft_set_instance_dict,
    "the instance's own attributes (made on first use)", NULL};

/* Makes `type` (a ready, static, final extension type whose `dictoffset` field is a
 * PyObject* the compiled code never touches) an `api_base` at runtime.  Call once per
 * type, at module import.  `before_dealloc`, if not NULL, runs first when an instance
 * dies, with the object's reference count at 0: it must not take a reference to it. */
static inline int ft_type_adopt(PyObject *type_obj, PyObject *api_base, Py_ssize_t dictoffset,
                                void (*before_dealloc)(PyObject *)) {
    PyTypeObject *type = (PyTypeObject *)type_obj;
    PyObject *own, *base_mro, *mro, *descr;
    Py_ssize_t i, n_own, n_base, k = 0;
    if (!PyType_Check(type_obj) || !PyType_Check(api_base)
            || (type->tp_flags & Py_TPFLAGS_HEAPTYPE) || type->tp_mro == NULL
            || type->tp_dictoffset != 0 || type->tp_weaklistoffset <= 0
            || ft_n_adopted == FT_MAX_ADOPTED || dictoffset <= 0
            || dictoffset + (Py_ssize_t)sizeof(PyObject *) > type->tp_basicsize) {
        PyErr_SetString(PyExc_SystemError, "ft_type_adopt: unsupported type");
        return -1;
    }
    if (ft_shared_empty_dict == NULL && (ft_shared_empty_dict = PyDict_New()) == NULL)
        return -1;
    own = type->tp_mro;
    base_mro = ((PyTypeObject *)api_base)->tp_mro;
    n_own = PyTuple_GET_SIZE(own);
    n_base = PyTuple_GET_SIZE(base_mro);
    /* the type's own MRO without `object`, then the API class's (which ends with it) */
    mro = PyTuple_New(n_own - 1 + n_base);
    if (mro == NULL) return -1;
    for (i = 0; i < n_own - 1; i++) {
        Py_INCREF(PyTuple_GET_ITEM(own, i));
        PyTuple_SET_ITEM(mro, k++, PyTuple_GET_ITEM(own, i));
    }
    for (i = 0; i < n_base; i++) {
        Py_INCREF(PyTuple_GET_ITEM(base_mro, i));
        PyTuple_SET_ITEM(mro, k++, PyTuple_GET_ITEM(base_mro, i));
    }
    descr = PyDescr_NewGetSet(type, &ft_instance_dict_getset);
    if (descr == NULL || PyDict_SetItemString(type->tp_dict, "__dict__", descr) < 0) {
        Py_XDECREF(descr);
        Py_DECREF(mro);
        return -1;
    }
    Py_DECREF(descr);
    ft_adopted[ft_n_adopted].type = type;
    ft_adopted[ft_n_adopted].traverse = type->tp_traverse;
    ft_adopted[ft_n_adopted].dealloc = type->tp_dealloc;
    ft_adopted[ft_n_adopted].setattro = type->tp_setattro;
    ft_adopted[ft_n_adopted].before_dealloc = before_dealloc;
    ft_adopted[ft_n_adopted].gc = (type->tp_flags & Py_TPFLAGS_HAVE_GC) != 0;
    if (ft_adopted[ft_n_adopted].gc) type->tp_traverse = ft_adopted_traverse;
    type->tp_dealloc = ft_adopted_deallocs[ft_n_adopted];
    ft_n_adopted++;
    type->tp_setattro = ft_adopted_setattro;
    type->tp_dictoffset = dictoffset;
    type->tp_mro = mro;
    Py_DECREF(own);
    PyType_Modified(type);
    return 0;
}
#endif
