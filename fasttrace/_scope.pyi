# SPDX-License-Identifier: Apache-2.0
"""Stub for the compiled fasttrace._scope (see _scope.pyx)."""
from types import TracebackType
from typing import Optional, Type, final

import opentracing
from typing_extensions import Self

from fasttrace._span import Span

@final
class Scope(opentracing.Scope):
    @property
    def span(self) -> Span: ...
    @property
    def manager(self) -> "ScopeManagerCore": ...
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, exc_type: Optional[Type[BaseException]],
                 exc_val: Optional[BaseException],
                 exc_tb: Optional[TracebackType]) -> None: ...

class ScopeManagerCore(opentracing.ScopeManager):
    def activate(self, span: opentracing.Span, finish_on_close: bool) -> Scope: ...
    @property
    def active(self) -> Optional[Scope]: ...
