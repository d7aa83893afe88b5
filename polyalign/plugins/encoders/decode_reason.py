"""What a decoding library said about a file it could not read, fit to quote in a polyalign message."""

from __future__ import annotations

import re

# a file object's repr (``<_io.BytesIO object at 0x7f...>``): an upload held in memory, meaningless to a person
OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


def decode_reason(exc: BaseException) -> str:
    """``exc``'s message without file-object reprs and without its closing period (the caller's
    sentence goes on after it)."""
    return OBJECT_REPR.sub("", str(exc)).strip().rstrip(".")
