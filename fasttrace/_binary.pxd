# SPDX-License-Identifier: Apache-2.0
# Format.BINARY (layout in _binary.pyx).
from fasttrace._context cimport SpanContext

cpdef int inject_binary(SpanContext ctx, object carrier) except -1
cpdef SpanContext extract_binary(object carrier)
