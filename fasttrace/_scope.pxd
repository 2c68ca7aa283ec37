# SPDX-License-Identifier: Apache-2.0
from cpython.object cimport PyObject


cdef class Scope:
    cdef PyObject *_dict
    cdef object __weakref__
    cdef object _manager
    cdef object _span
    cdef object _token
    cdef object _previous
    cdef bint _finish_on_close
    cdef bint _closed
    cdef bint _closed_elsewhere     # closed from a context other than the one it was set in


cdef class ScopeManagerCore:
    cdef object _var
    cdef Scope _activate(self, object span, bint finish_on_close)
    cdef object _active(self)
