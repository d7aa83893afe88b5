"""Memory a configuration is known to need before any step, against what this machine has.

The fit check (:mod:`polyalign.core.machine_fit`) uses it to warn about, and refuse to train, a
recipe that cannot run here (an ``embed_dim`` or a dataset too large to allocate, Symile's
all-combinations negatives over many modalities) with the number it computed, instead of letting
the run exhaust the machine. A recipe's validity never depends on it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class MemoryNeed:
    """Bytes a configuration needs before any step, how they were counted, and what lowers them."""

    bytes: float
    counted: str
    remedy: str


def physical_memory() -> int | None:
    """Bytes of RAM of this machine (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def bytes_text(n: float) -> str:
    """``n`` bytes for people: ``512 B``, ``1.5 GiB``, ``4.4e+03 TiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} TiB"


def memory_problem(need: MemoryNeed) -> str | None:
    """A message when ``need`` exceeds this machine's memory: the estimate, its basis, what to change."""
    have = physical_memory()
    if have is None or need.bytes <= have:
        return None
    return (f"{need.counted}: at least {bytes_text(need.bytes)} of memory, and this machine has "
            f"{bytes_text(have)}; {need.remedy}")
