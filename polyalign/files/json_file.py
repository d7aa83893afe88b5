"""Reading JSON that may be hostile: a bounded size and nesting, and errors that name the source.

Every JSON polyalign reads from a user's files goes through here: manifest lines and cells, shard
``.json`` members and ``sizes.json``, index sidecars (``FILE.faiss.json``), the ids of embeddings
files, evaluation reports, logged metrics, a tracker's run file, table rows and model configs.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyalign.core.errors import PolyalignError, cut, not_a_file

if TYPE_CHECKING:  # the encoder contract imports torch; reading JSON does not need it
    from .held_file import FileBytes

MAX_DEPTH = 64
"""Nesting levels of objects and arrays (what polyalign writes is at most a few levels deep)."""

MAX_FILE_BYTES = 1 << 30
"""Bytes of a JSON file read at most (an index sidecar holds one id per vector: 1 GiB is tens of
millions of ids); smaller files pass a smaller ``max_bytes``."""


class JsonError(PolyalignError):
    """JSON that cannot be read, is too large or too deeply nested; the message names its source."""


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def nesting(text: str) -> int:
    """How deep the arrays and objects of valid JSON ``text`` nest (0 for a bare value), counted in
    the text at C speed (strings removed first, so brackets inside them do not count)."""
    import numpy as np  # here, not at the top: the CLI starts without it

    bare = _STRING.sub("", text).encode("utf-8")
    deepest = level = 0
    for start in range(0, len(bare), 1 << 24):  # in chunks: a few bytes of memory per character of one chunk
        codes = np.frombuffer(bare, dtype=np.uint8, count=min(1 << 24, len(bare) - start), offset=start)
        steps = np.isin(codes, (ord("["), ord("{"))).astype(np.int64) - np.isin(codes, (ord("]"), ord("}")))
        levels = level + np.cumsum(steps)
        if len(levels):
            deepest, level = max(deepest, int(levels.max())), int(levels[-1])
    return deepest


def parse_json(text: str | bytes, source: str, max_depth: int = MAX_DEPTH) -> Any:
    """The value of JSON ``text`` (from ``source``, named in errors), nested at most ``max_depth`` levels."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise JsonError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JsonError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    except RecursionError:
        raise JsonError(f"{source}: nested too deeply (more than {max_depth} levels are refused)") from None
    except ValueError as exc:  # an integer of thousands of digits
        raise JsonError(f"{source}: a value cannot be read ({cut(str(exc), 200)})") from None
    if text.count("[") + text.count("{") > max_depth and nesting(text) > max_depth:  # else it cannot nest so deep
        raise JsonError(f"{source}: nested too deeply (more than {max_depth} levels are refused)")
    return value


def read_json(path: str | Path | FileBytes, what: str = "JSON file", max_bytes: int = MAX_FILE_BYTES,
              max_depth: int = MAX_DEPTH) -> Any:
    """The JSON file at ``path`` (or held in memory; ``what`` it holds names it in errors), at most
    ``max_bytes`` bytes, read through :func:`parse_json`."""
    source = f"{what} {path}"
    try:
        if not isinstance(path, (str, os.PathLike)):  # a FileBytes (a shard member)
            data = path.read_bytes()
        elif not Path(path).is_file():  # a folder, a FIFO or a device: nothing to read, or a read without end
            raise JsonError(f"cannot read {what}: {not_a_file(path)}")
        else:
            with open(path, "rb") as fh:
                data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise JsonError(f"cannot read {source}: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise JsonError(f"{source} is larger than {max_bytes} bytes, the most polyalign reads of such a file")
    return parse_json(data, source, max_depth)
