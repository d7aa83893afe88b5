"""How far a run directory has come, read from its files alone: the epochs logged against its recipe's, and
whether a live process holds it (``polyalign compare`` and ``sweep --status`` on a run still going)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from polyalign.core.errors import PolyalignError

from .json_file import JsonError, parse_json
from .run_files import LOCK_FILE, METRICS_FILE, RECIPE_FILE, log_lines
from .yaml_file import YamlError, read_yaml

try:
    import fcntl
except ImportError:  # Windows: runs are not locked there
    fcntl = None  # type: ignore[assignment]


def trained_epochs(run_dir: Path) -> tuple[int, int] | None:
    """(epochs logged in ``metrics.jsonl``, ``train.epochs`` of its recipe), or None when either is unreadable."""
    try:
        epochs = int(read_yaml(Path(run_dir) / RECIPE_FILE)["train"]["epochs"])
        lines = [line for _, line in log_lines(Path(run_dir) / METRICS_FILE)] \
            if (Path(run_dir) / METRICS_FILE).is_file() else []
    except (PolyalignError, YamlError, KeyError, TypeError, ValueError):
        return None
    done = 0
    for line in lines:
        try:
            row: Any = parse_json(line, str(Path(run_dir) / METRICS_FILE))
            if row.get("kind") == "epoch":
                done = max(done, int(row["epoch"]))
        except (JsonError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return min(done, epochs), epochs


def in_use(run_dir: Path) -> bool:
    """Whether a live process holds the run directory's lock (training or evaluating it now); False where
    locks are unavailable. A probe: a shared lock taken and dropped at once, never waited for."""
    path = Path(run_dir) / LOCK_FILE
    if fcntl is None or not path.is_file():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
