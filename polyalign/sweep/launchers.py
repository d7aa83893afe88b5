"""Where a sweep's runs go: processes on this machine (``local``: K at a time, the cores shared), or
jobs of submitit (its local executor, or Slurm with the sweep directory on shared storage)."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polyalign.launch import SlurmOptions, submitit_executor

from .worker import BUSY, DONE, FAILED, RUNNING, read_status, run_slot, run_slot_logged, slot_busy, write_status

Report = Callable[[str, dict[str, Any]], None]
"""Called with each run's id and final status as it ends."""

LAUNCHERS = ("local", "submitit-local", "slurm")


def usable_cores() -> list[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def threads_per_run(jobs: int, threads: int | None = None) -> int:
    """Threads for each of ``jobs`` runs at once: ``threads`` if given, else the cores shared evenly."""
    return threads or max(1, len(usable_cores()) // jobs)


def _die_with(sweep_alive: Any) -> None:
    """End this process (SIGKILL, as the sweep got) once the sweep process is gone: ``sweep_alive`` is the
    read end of a pipe whose only write end the sweep holds, so reading it ends when the sweep ends."""
    def watch() -> None:
        try:
            sweep_alive.recv()
        except (EOFError, OSError):
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="polyalign-sweep-watch", daemon=True).start()


def _child(work: Callable[[str, str, int], Any], sweep_dir: str, run_id: str, threads: int,
           cores: list[int] | None, sweep_alive: Any) -> None:
    _die_with(sweep_alive)
    if cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cores)
    work(sweep_dir, run_id, threads)


def _ended(sweep_dir: Path, run_id: str, exitcode: int | None) -> dict[str, Any]:
    """A run's status once its process ended: ``busy`` when another live process runs the slot (another sweep
    on the folder: its run is not this one's failure); a process that died without recording its end is a
    failure."""
    from .plan import read_plan, slot_dir

    slot = slot_dir(sweep_dir, read_plan(sweep_dir).run(run_id))
    status = read_status(slot)
    if status.get("state") != DONE and slot_busy(slot):
        return {"state": BUSY, "id": run_id}
    if status.get("state") in (None, RUNNING):
        how = f"signal {-exitcode}" if exitcode is not None and exitcode < 0 else f"exit code {exitcode}"
        status = write_status(slot, **{**status, "id": run_id, "state": FAILED,
                                       "error": f"the run's process ended with {how} before recording its end; "
                                                f"see {slot / 'output.log'}"})
    return status


def launch_local(sweep_dir: Path, run_ids: list[str], jobs: int, threads: int, report: Report,
                 work: Callable[[str, str, int], Any] = run_slot_logged,
                 ended: Callable[[Path, str, int | None], dict[str, Any]] | None = None) -> None:
    """Run ``work(sweep_dir, run_id, threads)`` for each of ``run_ids`` as processes on this machine, ``jobs``
    at a time, each pinned to its own share of the cores (when there are enough) with ``threads`` threads;
    each dies with this process, however it ends. ``ended`` gives a run's status from its exit code."""
    ended = ended or _ended
    ctx = multiprocessing.get_context("forkserver")
    sweep_alive, keep_open = ctx.Pipe(duplex=False)  # this process holds the only write end
    ctx.set_forkserver_preload(["polyalign.run", "polyalign.sweep.worker"])  # imported once, forked per run
    cores = usable_cores()
    pinned = len(cores) >= jobs * threads
    free = list(range(jobs))
    todo = list(run_ids)
    active: dict[Any, tuple[Any, str, int]] = {}
    try:
        while todo or active:
            while todo and free:
                j, run_id = free.pop(0), todo.pop(0)
                share = cores[j * threads:(j + 1) * threads] if pinned else None
                proc = ctx.Process(target=_child, args=(work, str(sweep_dir), run_id, threads, share, sweep_alive),
                                   name=f"polyalign sweep {run_id}")
                proc.start()
                active[proc.sentinel] = (proc, run_id, j)
            for sentinel in multiprocessing.connection.wait(list(active)):
                proc, run_id, j = active.pop(sentinel)
                proc.join()
                free.append(j)
                report(run_id, ended(sweep_dir, run_id, proc.exitcode))
    finally:
        for proc, _, _ in active.values():  # interrupted: stop the runs (resumed by the next call)
            proc.terminate()
        for proc, _, _ in active.values():
            proc.join()
        sweep_alive.close()
        keep_open.close()


def _job_status(sweep_dir: Path, run_id: str, job: Any) -> dict[str, Any]:
    """A submitit job's result; a job that failed outside the run (killed, out of time) is recorded as failed."""
    try:
        return job.result()
    except Exception as exc:  # noqa: BLE001 - recorded, the others go on
        from .plan import read_plan, slot_dir

        slot = slot_dir(sweep_dir, read_plan(sweep_dir).run(run_id))
        return write_status(slot, **{**read_status(slot), "id": run_id, "state": FAILED,
                                     "error": f"submitit job {job.job_id}: {str(exc).strip()[-1500:]}"})


def launch_submitit(sweep_dir: Path, run_ids: list[str], jobs: int, threads: int, report: Report,
                    cluster: str = "submitit-local", slurm: SlurmOptions | None = None) -> None:
    """Run ``run_ids`` as submitit jobs: on Slurm one job array (``jobs`` at a time); with the local
    executor ``jobs`` processes at a time. Waits for every job."""
    executor = submitit_executor(sweep_dir / "submitit", cluster, slurm or SlurmOptions(), "polyalign-sweep",
                                 threads=threads, array_parallelism=jobs)
    if cluster == "slurm":
        n = len(run_ids)
        for run_id, job in zip(run_ids, executor.map_array(run_slot, [str(sweep_dir)] * n, run_ids, [threads] * n)):
            report(run_id, _job_status(sweep_dir, run_id, job))
        return
    todo: list[str] = list(run_ids)
    active: list[tuple[str, Any]] = []
    while todo or active:
        while todo and len(active) < jobs:
            run_id = todo.pop(0)
            active.append((run_id, executor.submit(run_slot, str(sweep_dir), run_id, threads)))
        for run_id, job in [a for a in active if a[1].done()]:
            active.remove((run_id, job))
            report(run_id, _job_status(sweep_dir, run_id, job))
        if active:
            time.sleep(0.2)
