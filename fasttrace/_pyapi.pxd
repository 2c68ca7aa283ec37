# SPDX-License-Identifier: Apache-2.0
# The CPython C-API that Cython's own cpython/*.pxd do not declare (or declare with an
# exception spec that does not fit), declared once for every module.
from cpython.object cimport PyObject
from libc.string cimport strlen

cdef extern from "Python.h":
    # Without an exception spec: a NULL return (lone surrogates) is the caller's to handle
    # (see _wbuf.str_utf8).
    const char *PyUnicode_AsUTF8AndSize(object s, Py_ssize_t *size)
    object PyUnicode_AsEncodedString(object s, const char *encoding, const char *errors)
    int PyUnicode_CompareWithASCIIString(object s, const char *name) noexcept
    Py_ssize_t PyUnicode_GET_LENGTH(object s) noexcept
    double PyFloat_AS_DOUBLE(object f) noexcept
    void PyErr_Clear() noexcept
    char *PyOS_double_to_string(double val, char format_code, int precision, int flags,
                                int *ptype) except NULL
    enum:
        Py_DTSF_ADD_DOT_0
    object PyUnicode_New(Py_ssize_t size, Py_UCS4 maxchar)
    void *PyUnicode_DATA(object o) noexcept
    bint PyUnicode_IS_ASCII(object o) noexcept
    bint PyUnicode_IS_COMPACT_ASCII(object o) noexcept
    object PyUnicode_DecodeUTF8(const char *s, Py_ssize_t size, const char *errors)
    Py_ssize_t PyDict_GET_SIZE(object d) noexcept
    # NULL without an exception when the key is missing; str keys cannot fail to hash
    PyObject *PyDict_GetItemWithError(object d, object key)
    void PyObject_GC_UnTrack(object op)
    int PyObject_GenericSetAttr(object o, object name, PyObject *value) except -1


cdef inline bint str_named(object s, const char *name) noexcept:
    """s is a str (or subclass) with exactly the ASCII characters of `name`: compared
    without calling a subclass's __eq__; the length (strlen of a literal is a constant)
    rejects most strings without a call."""
    return (isinstance(s, str) and PyUnicode_GET_LENGTH(s) == <Py_ssize_t>strlen(name)
            and PyUnicode_CompareWithASCIIString(s, name) == 0)
