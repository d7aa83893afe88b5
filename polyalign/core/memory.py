"""Memory a configuration is known to need before any step, against what this machine has.

Validation uses it to refuse a recipe that cannot run here (an ``embed_dim`` or a dataset too
large to allocate, Symile's all-combinations negatives over many modalities) with the number it
computed, instead of letting the run exhaust the machine.
"""

from __future__ import annotations

import os


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


def memory_problem(need: float, what: str) -> str | None:
    """A message when ``need`` bytes exceed this machine's memory (``what`` says how they were counted)."""
    have = physical_memory()
    if have is None or need <= have:
        return None
    return f"{what}: at least {bytes_text(need)} of memory, and this machine has {bytes_text(have)}"
