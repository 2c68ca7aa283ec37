/* SPDX-License-Identifier: Apache-2.0
 * Small CPython helpers the .pyx modules cannot express. */
#ifndef FT_PYUTIL_H
#define FT_PYUTIL_H
#include <Python.h>

/* list[i] = value for an index known to be in range: the arena's object columns are
 * lists written on every tag and recycled slot, where Cython's generic item
 * assignment showed up at 7% of a span's cost. */
static inline void ft_list_set(PyObject *list, Py_ssize_t i, PyObject *value) {
    PyObject *old = PyList_GET_ITEM(list, i);
    Py_INCREF(value);
    PyList_SET_ITEM(list, i, value);
    Py_XDECREF(old);
}

/* list[i] for an index known to be in range; a new reference. */
static inline PyObject *ft_list_get(PyObject *list, Py_ssize_t i) {
    PyObject *v = PyList_GET_ITEM(list, i);
    Py_INCREF(v);
    return v;
}
#endif
