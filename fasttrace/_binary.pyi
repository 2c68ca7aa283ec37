# SPDX-License-Identifier: Apache-2.0
from typing import Optional, Union

from fasttrace._context import SpanContext

def inject_binary(ctx: SpanContext, carrier: bytearray) -> int: ...
def extract_binary(carrier: Union[bytes, bytearray, memoryview]) -> Optional[SpanContext]: ...
