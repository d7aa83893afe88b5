"""Idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``, unless set already).

On a machine shared with other busy processes a spinning thread takes the CPU its team mates wait
for (``benchmarks/contention.py``, BENCHMARKS.md). OpenMP reads the variable once, when torch loads
it, so this module is imported first by ``polyalign/__init__.py`` and has no effect once torch is loaded.
"""

from __future__ import annotations

import os
import sys

if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
