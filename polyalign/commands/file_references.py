"""Every row's file references checked by a stat (no decoding), so that a missing file on row 90,000 shows in
``validate --check-data`` and not hours into training."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from polyalign.core.data import Sample

SHOWN = 20
"""Broken references listed one by one; the rest are counted."""


def _broken(path: Path, root: Path | None) -> str | None:
    """Why the file ``path`` (relative to ``root``) cannot be read, or None when it is a readable file."""
    full = path if path.is_absolute() or root is None else root / path
    try:
        found = os.stat(full)
    except FileNotFoundError:
        if full.with_name(full.name + ".hea").is_file():  # a WFDB record, named without its .hea
            return None
        return f"{full} not found"
    except OSError as exc:
        return f"{full}: {exc.strerror or exc}"
    if stat.S_ISDIR(found.st_mode):
        return f"{full} is a folder, not a file"
    if not os.access(full, os.R_OK):
        return f"{full} is not readable (permissions)"
    return None


def broken_references(samples: Sequence[Sample], root: Path | None,
                      where: Callable[[int], str]) -> list[tuple[int, str]]:
    """(row, message) for each cell of ``samples`` that names a file (a :class:`~pathlib.Path`) which is
    missing, a folder or unreadable; the message says ``where(row)``, the modality and why."""
    problems = []
    for i, sample in enumerate(samples):
        for modality, value in sample.items():
            if isinstance(value, Path) and (why := _broken(value, root)) is not None:
                problems.append((i, f"{where(i)}, modality {modality!r}: {why}"))
    return problems


def bounded(problems: list[str], limit: int = SHOWN) -> list[str]:
    """The first ``limit`` problems, then one line counting the others."""
    return problems[:limit] + ([f"... and {len(problems) - limit} more"] if len(problems) > limit else [])
