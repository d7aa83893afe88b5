"""Errors meant for people: each says what was wrong, where, and what to do; none is unbounded."""

from __future__ import annotations

import reprlib
from pathlib import Path
from typing import Any

MAX_MESSAGE_CHARS = 6000
"""An error message is cut to this many characters: a value echoed in it may be a size bomb."""

MAX_PROBLEMS_SHOWN = 20
"""A recipe error lists this many problems, then says how many more there are."""

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8
_REPR.maxlevel = 3


def shown(value: Any) -> str:
    """``repr(value)`` cut to about 80 characters (and 8 items, 3 levels): for echoing input in errors."""
    return _REPR.repr(value)


def cut(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` if it is at most ``limit`` characters, else its start and end around a note of the cut (``limit``
    characters in all)."""
    if len(text) <= limit:
        return text
    keep = max(limit - len(f" [... {len(text)} characters cut ...] "), 0)
    tail = keep // 10
    return f"{text[:keep - tail]} [... {len(text) - keep} characters cut ...] {text[len(text) - tail:]}"


def not_a_file(path: Any) -> str:
    """Why ``path`` cannot be read as a file, in words: it is missing, a folder, or not a regular file."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a folder, not a file"
    if path.exists():
        return f"{path} is not a regular file (a device, pipe or socket)"
    return f"{path} does not exist"


class PolyalignError(Exception):
    """An error the CLI prints as one clear message (no traceback); cut to MAX_MESSAGE_CHARS."""

    def __init__(self, message: str = "", *args: Any):
        super().__init__(cut(str(message)), *args)


class RecipeError(PolyalignError):
    """A recipe failed validation; ``problems`` holds every (yaml_path, message) pair."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [f"{cut(source, 300)}: {len(problems)} problem(s) in the recipe:"]
        lines += [f"  {cut(path, 200) or '<root>'}: {cut(msg, 600)}" for path, msg in problems[:MAX_PROBLEMS_SHOWN]]
        if len(problems) > MAX_PROBLEMS_SHOWN:
            lines.append(f"  ... and {len(problems) - MAX_PROBLEMS_SHOWN} more")
        super().__init__("\n".join(lines))


class PluginError(PolyalignError):
    """A plugin was missing, registered twice, or returned something it should not."""


class Notice(UserWarning):
    """Something a user should know that is no error (work left out, a fallback taken): the CLI
    prints it as one ``note:`` line, without the warning's source line."""
