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


_NESTS = (list, dict)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # \ud800-\udfff: half of a pair, never a character alone


def nesting(value: Any) -> int:
    """How deep the lists and dicts of a parsed JSON ``value`` nest (0 for a bare value), walked level by level."""
    deepest, level = 0, [value] if type(value) in _NESTS else []
    while level:  # the lists and dicts one level down (a list of millions of numbers adds none)
        deepest += 1
        level = [v for c in level for v in (c.values() if type(c) is dict else c) if type(v) in _NESTS]
    return deepest


def lone_surrogate(value: Any) -> str | None:
    """The first string (or key) of a parsed JSON ``value`` holding half of a surrogate pair alone, or None."""
    level = [value]
    while level:
        for item in level:
            for s in (item, *item) if type(item) is dict else (item,):
                if type(s) is str:
                    try:
                        s.encode("utf-8")
                    except UnicodeEncodeError:
                        return s
        level = [v for c in level if type(c) in _NESTS for v in (c.values() if type(c) is dict else c)]
    return None


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
    # json.loads bounds nesting by Python's recursion limit (RecursionError above); the walk bounds it to max_depth
    if text.count("[") + text.count("{") > max_depth and nesting(value) > max_depth:  # else it cannot nest so deep
        raise JsonError(f"{source}: nested too deeply (more than {max_depth} levels are refused)")
    if _SURROGATE_ESCAPE.search(text) and (bad := lone_surrogate(value)) is not None:
        raise JsonError(f"{source}: the string {cut(ascii(bad), 80)} holds half of a UTF-16 surrogate pair alone "
                        f"(\\ud800-\\udfff), which is not a character; send text as UTF-8 or as complete pairs")
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
