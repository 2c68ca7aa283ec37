/* SPDX-License-Identifier: Apache-2.0
 * Small CPython helpers the .pyx modules cannot express. */
#ifndef FT_PYUTIL_H
#define FT_PYUTIL_H
#include <Python.h>

/* True when an object of a type with an instance __dict__ has attributes set on it
 * (e.g. a method patched by mock.patch.object), without creating the dict. */
static inline int ft_has_instance_attrs(PyObject *o) {
    Py_ssize_t off = Py_TYPE(o)->tp_dictoffset;
    PyObject *d;
    if (off <= 0) return 0;
    d = *(PyObject **)((char *)o + off);
    return d != NULL && PyDict_GET_SIZE(d) > 0;
}
#endif
