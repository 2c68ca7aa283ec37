# SPDX-License-Identifier: Apache-2.0
"""Scope managers: which span is active, per thread and per asyncio task.

ContextVarsScopeManager (the default) keeps the active scope in a ContextVar, so it is
right across threads and asyncio tasks alike (a task starts with the scope that was
active where it was created).  It is compiled, because start_active_span and the
parent lookup of every start_span go through it.  ThreadLocalScopeManager is
opentracing's, for code that wants thread-local semantics.
"""
import opentracing
from opentracing.scope_managers import ThreadLocalScopeManager

from fasttrace._scope import Scope, ScopeManagerCore


class ContextVarsScopeManager(ScopeManagerCore, opentracing.ScopeManager):
    """An opentracing.ScopeManager over contextvars (threads and asyncio)."""

    def __init__(self):
        ScopeManagerCore.__init__(self)


__all__ = ["ContextVarsScopeManager", "Scope", "ThreadLocalScopeManager"]
