# SPDX-License-Identifier: Apache-2.0
"""Span and SpanContext (compiled; see _span.pyx and _context.pyx)."""
from fasttrace._context import SpanContext
from fasttrace._span import Span

__all__ = ["Span", "SpanContext"]
