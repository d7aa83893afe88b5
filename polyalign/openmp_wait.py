"""Idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``, unless set already).

On a machine shared with other busy processes a spinning thread takes the CPU its team mates wait
for (``benchmarks/contention.py``, BENCHMARKS.md). OpenMP reads the variable once, when torch loads
it, so the ``polyalign`` command sets it first thing; ``import polyalign`` changes no environment variable.
"""

from __future__ import annotations

import os
import sys


def wait_passively() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` for this process unless it is set, or torch (and OpenMP) is loaded already."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
