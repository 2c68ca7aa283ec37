# SPDX-License-Identifier: Apache-2.0
"""``@fasttrace.traced``: a span around every call of a function.

    @fasttrace.traced
    def load(user_id): ...

    @fasttrace.traced("db.query", tags={"db.type": "sql"})
    async def query(sql): ...

The span is a child of the active span and is itself active while the function runs
(across ``await`` for coroutine functions), so spans started inside are its children.
An exception marks it (``error=true`` and an error log) and propagates unchanged;
cancellation (``asyncio.CancelledError``, ``KeyboardInterrupt``) ends it without
marking it.

Generator functions (sync and async) get one span from the first ``next()`` to the end
of the iteration, active only while the generator's own code runs -- not in the
consumer between items; closing the generator early ends the span.  Values sent with
``send()`` and exceptions thrown with ``throw()`` pass through.

Args:
    operation_name: the span's name; default the function's ``__qualname__``.
    tracer: an OpenTracing tracer; None means ``opentracing.global_tracer()`` at each call.
    tags: tags set on every span.
"""
from __future__ import annotations

import functools

import opentracing

from fasttrace._failures import internal_error
from fasttrace.errors import mark_error

__all__ = ["traced"]

_WHERE = "traced"

# typing (and inspect, below) cost `import fasttrace` more than this module itself: the
# annotations are for type checkers only
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Mapping, Optional, TypeVar, overload

    F = TypeVar("F", bound=Callable[..., Any])

    @overload
    def traced(operation_name: F) -> F: ...

    @overload
    def traced(operation_name: Optional[str] = None,
               tracer: Optional[opentracing.Tracer] = None,
               tags: Optional[Mapping[str, Any]] = None) -> Callable[[F], F]: ...


def traced(operation_name: Any = None, tracer: Optional[opentracing.Tracer] = None,
           tags: Optional[Mapping[str, Any]] = None) -> Any:
    """Decorator: a span around each call (see the module doc).  Usable bare
    (``@traced``) or called (``@traced("name", tags={...})``)."""
    if callable(operation_name) and not isinstance(operation_name, str):
        return _decorate(operation_name, None, tracer, tags)
    if operation_name is not None and not isinstance(operation_name, str):
        raise TypeError(f"operation_name must be a str, not {type(operation_name).__name__}")

    def decorator(func):
        return _decorate(func, operation_name, tracer, tags)

    return decorator


class _Call:
    """The span of one call, active during it: ``with`` it around the call (an exception
    marks the span; then the scope is closed and the span finished)."""

    __slots__ = ("span", "scope")

    def __init__(self, span, scope):
        self.span = span
        self.scope = scope

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None and issubclass(exc_type, Exception):
            mark_error(self.span, exc)
        self.scope.close()
        self.span.finish()
        return False


def _active(manager, span, call, /, *args, **kwargs):
    """``call(*args, **kwargs)`` with `span` active."""
    scope = manager.activate(span, False)
    try:
        return call(*args, **kwargs)
    finally:
        scope.close()


def _decorate(func, operation_name, tracer, tags):
    import inspect
    if not callable(func):
        raise TypeError(f"@traced needs a function, not {func!r}")
    name = operation_name or getattr(func, "__qualname__", None) or repr(func)
    tags = dict(tags) if tags else None

    def start(active):
        """A `_Call` (`active`), else (tracer, span); None when starting failed."""
        try:
            t = tracer if tracer is not None else opentracing.global_tracer()
            span = t.start_span(name, tags=tags)
            if active:
                return _Call(span, t.scope_manager.activate(span, False))
            return t, span
        except Exception:
            internal_error(_WHERE, "starting a span")
            return None

    if inspect.isasyncgenfunction(func):
        @functools.wraps(func)
        async def async_gen_wrapper(*args, **kwargs):
            started = start(False)
            if started is None:
                async for item in func(*args, **kwargs):
                    yield item
                return
            t, span = started
            manager = t.scope_manager
            agen = None
            try:
                agen = _active(manager, span, func, *args, **kwargs)
                resume, arg = agen.asend, None
                while True:
                    scope = manager.activate(span, False)
                    try:
                        item = await resume(arg)
                    except StopAsyncIteration:
                        return
                    finally:
                        scope.close()
                    try:
                        resume, arg = agen.asend, (yield item)
                    except GeneratorExit:
                        raise
                    except BaseException as exc:
                        resume, arg = agen.athrow, exc
            except GeneratorExit:
                if agen is not None:
                    await agen.aclose()
                raise
            except Exception as exc:
                mark_error(span, exc)
                raise
            finally:
                span.finish()

        return async_gen_wrapper

    if inspect.isgeneratorfunction(func):
        @functools.wraps(func)
        def gen_wrapper(*args, **kwargs):
            started = start(False)
            if started is None:
                return (yield from func(*args, **kwargs))
            t, span = started
            manager = t.scope_manager
            gen = None
            try:
                gen = _active(manager, span, func, *args, **kwargs)
                resume, arg = gen.send, None
                while True:
                    try:
                        item = _active(manager, span, resume, arg)
                    except StopIteration as stop:
                        return stop.value
                    try:
                        resume, arg = gen.send, (yield item)
                    except GeneratorExit:
                        raise
                    except BaseException as exc:
                        resume, arg = gen.throw, exc
            except GeneratorExit:
                if gen is not None:
                    _active(manager, span, gen.close)
                raise
            except Exception as exc:
                mark_error(span, exc)
                raise
            finally:
                span.finish()

        return gen_wrapper

    if inspect.iscoroutinefunction(func):
        @functools.wraps(func)
        async def async_wrapper(*args, **kwargs):
            call = start(True)
            if call is None:
                return await func(*args, **kwargs)
            with call:
                return await func(*args, **kwargs)

        return async_wrapper

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        call = start(True)
        if call is None:
            return func(*args, **kwargs)
        with call:
            return func(*args, **kwargs)

    return wrapper
