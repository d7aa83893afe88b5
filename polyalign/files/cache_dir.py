"""Where polyalign keeps what it generates or caches between runs (demo data, input and feature caches)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$POLYALIGN_CACHE``, else ``$XDG_CACHE_HOME/polyalign``, else ``~/.cache/polyalign``."""
    if os.environ.get("POLYALIGN_CACHE"):
        return Path(os.environ["POLYALIGN_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "polyalign"
