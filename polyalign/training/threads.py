"""How many threads torch gets in a training process (``train.threads: auto``): the CPUs this
process may use (its affinity mask and its cgroup's CPU quota), shared among the training
processes of this machine (``LOCAL_WORLD_SIZE`` under torchrun), less one per DataLoader worker.

More threads than CPUs is the costly mistake on a shared machine: torch's threads wait for each
other at every parallel operation, and a thread that is not running stalls the others.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _quota(text: str) -> float | None:
    """CPUs a cgroup v2 ``cpu.max`` (``"max 100000"``, ``"150000 100000"``) allows, None for no limit."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """CPUs the cgroup quota allows this process (the smallest ``cpu.max`` of its cgroup v2 group
    and the groups above it; cgroup v1's ``cpu.cfs_quota_us``), or None where nothing limits it."""
    try:
        lines = proc_cgroup.read_text(encoding="utf-8").splitlines()
    except OSError:
        lines = []
    limits = []
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and controllers == "":  # cgroup v2: this group and every group above it
            parts = [p for p in path.split("/") if p]
            for depth in range(len(parts) + 1):
                limits.append(_read_limit(root.joinpath(*parts[:depth]) / "cpu.max", None))
        elif "cpu" in controllers.split(","):  # cgroup v1
            for folder in (root / controllers, root / controllers / path.lstrip("/")):
                limits.append(_read_limit(folder / "cpu.cfs_quota_us", folder / "cpu.cfs_period_us"))
    found = [x for x in limits if x is not None]
    return min(found) if found else None


def _read_limit(quota_file: Path, period_file: Path | None) -> float | None:
    try:
        text = quota_file.read_text(encoding="utf-8").strip()
        if period_file is not None:
            text = f"{text} {period_file.read_text(encoding='utf-8').strip()}"
    except OSError:
        return None
    return _quota(text.replace("-1 ", "max "))


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask, bounded by its cgroup's CPU quota (rounded up)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit()
    return max(1, min(cpus, math.ceil(limit)) if limit is not None else cpus)


def local_processes() -> int:
    """Training processes on this machine (torchrun's ``LOCAL_WORLD_SIZE``; 1 without torchrun)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def auto_threads(workers: int) -> int:
    """``train.threads: auto``: this process's share of the usable CPUs (:func:`usable_cpus` over
    :func:`local_processes`) less its ``workers`` DataLoader workers, at least 1, and never more
    than torch was given (``OMP_NUM_THREADS``, ``torch.set_num_threads``)."""
    share = usable_cpus() // local_processes()
    return max(1, min(share - workers, torch.get_num_threads()))
