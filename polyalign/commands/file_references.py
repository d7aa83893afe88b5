"""Every row's file references checked by a stat (no decoding), so that a missing file on row 90,000 shows in
``validate --check-data`` and not hours into training."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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


def _suffixes(samples: Sequence[Sample]) -> dict[str, set[str]]:
    """The file endings each modality's file cells have (``{"imu": {".csv"}}``)."""
    found: dict[str, set[str]] = {}
    for sample in samples:
        for modality, value in sample.items():
            if isinstance(value, Path) and value.suffix:
                found.setdefault(modality, set()).add(value.suffix.lower())
    return found


def _lost_file(value: Any, suffixes: set[str]) -> bool:
    """Whether a text cell reads as the name of a missing file: one word ending as the column's files do."""
    return (isinstance(value, str) and bool(value) and not any(c.isspace() for c in value)
            and Path(value).suffix.lower() in suffixes)


def broken_references(samples: Sequence[Sample], root: Path | None,
                      where: Callable[[int], str]) -> tuple[int, list[tuple[int, str]]]:
    """The file references of ``samples`` counted, and (row, message) for each cell that names a file (a
    :class:`~pathlib.Path`) which is missing, a folder or unreadable, and each one-word text cell ending as
    the other files of its column do (``imu/0006.csv`` read as text because the file is missing); the
    message says ``where(row)``, the modality and why."""
    endings = _suffixes(samples)
    count, problems = 0, []
    for i, sample in enumerate(samples):
        for modality, value in sample.items():
            if isinstance(value, Path):
                why = _broken(value, root)
            elif _lost_file(value, endings.get(modality, set())):
                why = (f"{value if root is None else root / value} not found (so the cell would be read as text, "
                       f"while the column's other rows name {Path(value).suffix} files)")
            else:
                continue
            count += 1
            if why is not None:
                problems.append((i, f"{where(i)}, modality {modality!r}: {why}"))
    return count, problems


def bounded(problems: list[str], limit: int = SHOWN) -> list[str]:
    """The first ``limit`` problems, then one line counting the others."""
    return problems[:limit] + ([f"... and {len(problems) - limit} more"] if len(problems) > limit else [])
