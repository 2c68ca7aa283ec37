# SPDX-License-Identifier: Apache-2.0
"""Scopes and the contextvars scope manager: which span is active, per thread and task.

The active scope lives in opentracing's own ContextVar, so
`opentracing.scope_managers.contextvars.no_parent_scope()` works, and a scope activated
by opentracing's ContextVarsScopeManager is the active one here too.
"""
cimport cython
from cpython.contextvars cimport PyContextVar_Set, PyContextVar_Reset, get_value
from cpython.object cimport PyObject

import opentracing
# The ContextVar opentracing's own contextvars helpers read and write
# (no_parent_scope() sets it to None): sharing it means one notion of "the active
# scope" for fasttrace's manager, opentracing's ContextVarsScopeManager and them.
from opentracing.scope_managers.contextvars import _SCOPE as _ACTIVE_SCOPE

from fasttrace._cdefs cimport ft_type_adopt
from fasttrace._span cimport Span, now_ns
from fasttrace.errors import log_error


@cython.final
@cython.no_gc_clear
@cython.freelist(256)
cdef class Scope:
    """Activation of a span in a ScopeManager (an opentracing.Scope)."""

    def __init__(self, *args, **kwargs):
        raise TypeError("scopes are created by ScopeManager.activate()")

    @property
    def span(self):
        return self._span

    @property
    def manager(self):
        return self._manager

    def close(self):
        cdef ScopeManagerCore manager = self._manager
        if self._closed or manager._active() is not self:
            return          # only the active scope closes (OpenTracing harness)
        self._closed = True
        try:
            PyContextVar_Reset(manager._var, self._token)
        except ValueError:
            # closed from another context (a scope handed to another task or thread):
            # the token cannot be used there, so restore the previous scope by value,
            # and the context it was activated in skips it from now on
            self._closed_elsewhere = True
            PyContextVar_Set(manager._var, self._previous)
        self._token = None
        if self._finish_on_close:
            span = self._span
            if type(span) is Span and (<Span>span)._patched is None:
                (<Span>span)._finish(now_ns() if (<Span>span).slot >= 0 else 0)
            else:
                span.finish()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        span = self._span
        if exc_val is not None:
            if type(span) is Span and (<Span>span)._patched is None:
                (<Span>span)._on_error(exc_type, exc_val, exc_tb)
            else:
                log_error(span, exc_type, exc_val, exc_tb)
        self.close()


cdef class ScopeManagerCore:
    """contextvars-based active-scope tracking (threads and asyncio tasks)."""

    def __init__(self):
        self._var = _ACTIVE_SCOPE

    cdef object _active(self):
        # A scope closed from another task or thread cannot be unset in the context it
        # was activated in (a token only resets where it was made): there it stays
        # set, and the active scope is the one it replaced.  (A scope closed where it
        # was activated stays active in the contexts copied from there before, for
        # the tasks and callbacks that were started under it.)
        scope = get_value(self._var)
        while type(scope) is Scope and (<Scope>scope)._closed_elsewhere:
            scope = (<Scope>scope)._previous
        return scope

    cdef Scope _activate(self, object span, bint finish_on_close):
        cdef Scope scope = Scope.__new__(Scope)
        scope._manager = self
        scope._span = span
        scope._finish_on_close = finish_on_close
        scope._previous = self._active()
        scope._token = PyContextVar_Set(self._var, scope)
        return scope

    def activate(self, span, finish_on_close):
        return self._activate(span, finish_on_close)

    @property
    def active(self):
        return self._active()


cdef Py_ssize_t _scope_dict_offset():
    cdef Scope probe = Scope.__new__(Scope)
    return <char*>&probe._dict - <char*><PyObject*>probe



# Scopes are opentracing.Scope (see src/ft_pytype.h).
ft_type_adopt(Scope, opentracing.Scope, _scope_dict_offset(), NULL)
