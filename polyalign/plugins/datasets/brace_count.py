"""How many names a brace pattern (``data/a-{000000..000099}.tar``) expands to, counted without expanding it.

The grammar is that of the ``braceexpand`` package webdataset uses: ``{A..B}`` and ``{A..B..STEP}``
ranges of integers or letters, ``{x,y,z}`` sequences (nested), ``\\`` escapes, and braces holding
neither kept as text. ``braceexpand`` builds every name in memory, so a short pattern such as
``{000000000..999999999}`` takes gigabytes before the first shard is opened; counting first lets
such a pattern be refused with its count.
"""

from __future__ import annotations

import re

_INT_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.-?(\d+))?$")
_CHAR_RANGE = re.compile(r"^([A-Za-z])\.\.([A-Za-z])(?:\.\.-?(\d+))?$")
_ALPHABET = [chr(i) for i in range(ord("A"), ord("Z") + 1)] + [chr(i) for i in range(ord("a"), ord("z") + 1)]


def count_expansions(pattern: str) -> int:
    """The number of names ``braceexpand(pattern)`` yields (1 for a pattern without braces)."""
    total, pos, depth, start = 1, 0, 0, 0
    while pos < len(pattern):
        char = pattern[pos]
        if char == "\\":
            pos += 2
            continue
        if char == "{":
            if depth == 0:
                start = pos
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                expr = pattern[start + 1:pos]
                counted = _expression(expr)
                total *= count_expansions(expr) if counted is None else counted
        pos += 1
    if depth != 0:
        raise ValueError(f"unbalanced braces in {pattern!r}")
    return total


def _range_size(start: int, end: int, step: str | None) -> int:
    step_size = (int(step) or 1) if step else 1
    return abs(end - start) // step_size + 1


def _expression(expr: str) -> int | None:
    """The count of one ``{...}`` body: a range, a sequence, or None for text kept as it is."""
    match = _INT_RANGE.match(expr)
    if match:
        return _range_size(int(match[1]), int(match[2]), match[3])
    match = _CHAR_RANGE.match(expr)
    if match:
        return _range_size(_ALPHABET.index(match[1]), _ALPHABET.index(match[2]), match[3])
    items, pos, depth, start = [], 0, 0, 0
    while pos < len(expr):
        char = expr[pos]
        if char == "\\":
            pos += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(expr[start:pos])
            start = pos + 1
        pos += 1
    if depth != 0 or not items:
        return None
    items.append(expr[start:])
    return sum(count_expansions(item) for item in items)
