"""One run of a sweep, in whatever process a launcher gives it: start it, or resume it where a killed
sweep left it (``train --resume``), or leave it alone when it has finished; its status on disk."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import traceback
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from polyalign.core.errors import PolyalignError, cut
from polyalign.files.atomic import atomic_write_text
from polyalign.files.json_file import JsonError, read_json
from polyalign.files.run_files import RECIPE_FILE, REPORT_DIR, REPORT_JSON

from .plan import OUTPUT_FILE, STATUS_FILE, find_run_dir, read_plan, slot_dir

try:
    import fcntl
except ImportError:  # Windows: slots are not locked there
    fcntl = None  # type: ignore[assignment]

SLOT_LOCK = ".sweep.lock"
DONE, FAILED, RUNNING, PENDING, INTERRUPTED, BUSY = "done", "failed", "running", "pending", "interrupted", "busy"


def read_status(slot: Path) -> dict[str, Any]:
    """A slot's ``status.json`` (``{}`` when the run never started or the file is unreadable)."""
    try:
        status = read_json(Path(slot) / STATUS_FILE, "sweep run status")
    except JsonError:
        return {}
    return status if isinstance(status, dict) else {}


def write_status(slot: Path, **status: Any) -> dict[str, Any]:
    """Record a slot's status (atomically); return it."""
    atomic_write_text(Path(slot) / STATUS_FILE, json.dumps(status, indent=2) + "\n")
    return status


def remove_unstarted_runs(slot: Path) -> None:
    """Remove the empty folders a kill left in ``slot`` between a run directory's mkdir and its recipe
    (the worker's own, before it runs the slot; anything not empty is left alone)."""
    for d in sorted(p for p in slot.iterdir() if p.is_dir() and not (p / RECIPE_FILE).is_file()):
        with contextlib.suppress(OSError):
            d.rmdir()


def finished(run_dir: Path | None, status: dict[str, Any] | None = None) -> bool:
    """Whether a run directory holds a finished run: its evaluation report written (last), and its slot's
    ``status`` not a failure (a failed evaluator leaves the other evaluators' report)."""
    return (run_dir is not None and (run_dir / REPORT_DIR / REPORT_JSON).is_file()
            and (status or {}).get("state") != FAILED)


@contextlib.contextmanager
def slot_lock(slot: Path) -> Iterator[bool]:
    """Hold the slot's lock for the block; yields False (and holds nothing) when another process has it.
    The kernel drops the lock with its process, however it ends."""
    if fcntl is None:
        yield True
        return
    fd = os.open(Path(slot) / SLOT_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def slot_busy(slot: Path) -> bool:
    """Whether a live process is running the slot now (holds its lock)."""
    if fcntl is None or not (Path(slot) / SLOT_LOCK).is_file():
        return False
    with slot_lock(slot) as got:
        return not got


def error_text(exc: BaseException) -> str:
    """One line for a failed run: the message of a polyalign error, else the exception's type and message."""
    if isinstance(exc, PolyalignError):
        return cut(str(exc), 2000)
    return cut(f"{type(exc).__name__}: {exc}", 2000)


def run_slot(sweep_dir: str | Path, run_id: str, threads: int | None = None) -> dict[str, Any]:
    """Run (or resume, or skip if finished) the run ``run_id`` of the sweep in ``sweep_dir``; return its
    status. Errors of the run are recorded in the status, not raised."""
    from polyalign.run import train

    sweep_dir = Path(sweep_dir).resolve()
    plan = read_plan(sweep_dir)
    spec = plan.run(run_id)
    slot = slot_dir(sweep_dir, spec)
    slot.mkdir(parents=True, exist_ok=True)
    with slot_lock(slot) as got:
        if not got:
            return {"state": BUSY, "id": run_id}
        old = read_status(slot)
        remove_unstarted_runs(slot)
        run_dir = find_run_dir(slot)
        if finished(run_dir, old):
            return old if old.get("state") == DONE else write_status(
                slot, **{**old, "state": DONE, "id": run_id, "run_dir": str(run_dir)})
        if threads:
            import torch

            torch.set_num_threads(threads)
        attempts = int(old.get("attempts", 0)) + 1
        base = {"id": run_id, "attempts": attempts, "host": socket.gethostname(), "pid": os.getpid(),
                "threads": threads, "started": datetime.now().isoformat(timespec="seconds"),
                "seconds_before": float(old.get("seconds", 0.0))}
        write_status(slot, **base, state=RUNNING, run_dir=str(run_dir) if run_dir else None)
        t0 = time.monotonic()
        here = os.getcwd()
        os.chdir(plan.cwd)  # relative paths in the recipe mean what they meant to the sweep command
        try:
            if run_dir is None:
                run_dir = train(plan.recipe, out=slot, overrides=plan.all_overrides(spec))
            else:
                print(f"resuming {run_dir} (attempt {attempts})", flush=True)
                run_dir = train(None, resume=run_dir)
        except Exception as exc:  # noqa: BLE001 - a failed run is recorded; the sweep goes on
            traceback.print_exc()
            seconds = base["seconds_before"] + time.monotonic() - t0
            return write_status(slot, **base, state=FAILED, error=error_text(exc), seconds=seconds,
                                run_dir=str(find_run_dir(slot) or "") or None)
        finally:
            os.chdir(here)
        seconds = base["seconds_before"] + time.monotonic() - t0
        return write_status(slot, **base, state=DONE, run_dir=str(run_dir), seconds=seconds,
                            finished=datetime.now().isoformat(timespec="seconds"))


def run_slot_logged(sweep_dir: str | Path, run_id: str, threads: int | None = None) -> dict[str, Any]:
    """:func:`run_slot` with this process's output appended to the slot's ``output.log``."""
    spec = read_plan(Path(sweep_dir)).run(run_id)
    slot = slot_dir(Path(sweep_dir), spec)
    slot.mkdir(parents=True, exist_ok=True)
    with open(slot / OUTPUT_FILE, "ab", buffering=0) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    return run_slot(sweep_dir, run_id, threads)
