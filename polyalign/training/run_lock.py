"""One process at a time on a run directory: a lock that names its holder and dies with it.

The lock is an ``flock`` on ``RUN_DIR/.polyalign.lock``: the kernel releases it when its process
ends, however it ends (a ``kill -9`` included), so a stale lock never blocks the next resume. The
file records the holder (pid, host, start, command) for the message a second process gets. Under
``torchrun`` rank 0 owns the run directory: it takes the lock and every rank learns whether it could.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from polyalign.core.errors import PolyalignError, cut
from polyalign.files.json_file import JsonError, parse_json
from polyalign.files.run_files import LOCK_FILE

from .distributed import DistInfo, broadcast_from_main

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not locked there
    fcntl = None  # type: ignore[assignment]


class RunBusyError(PolyalignError):
    """Another process holds the run directory."""


_HELD: set[int] = set()  # lock descriptors of this process


def _close_held_in_child() -> None:
    """A forked child (a DataLoader worker) drops the run locks it inherited: the lock stays with
    the parent and goes when the parent goes, even if the child outlives it for a moment."""
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_held_in_child)


def _holder(fd: int) -> str:
    """The holder recorded in an open lock file, in words."""
    try:
        info = parse_json(os.pread(fd, 4096, 0), "lock file")
        return (f"pid {info['pid']} on host {info['host']}, since {info['started']}: "
                f"{cut(str(info['command']), 200)}")
    except (OSError, JsonError, KeyError, TypeError):
        return "a process that has not recorded itself yet"


def lock_run_dir(run_dir: Path) -> int | None:
    """Take the lock of ``run_dir``; return its file descriptor (None where locks are unavailable).

    Raises :class:`RunBusyError` naming the holder when another live process has it.
    """
    if fcntl is None:
        return None
    path = Path(run_dir) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            holder = _holder(fd)
            os.close(fd)
            raise RunBusyError(f"{run_dir} is in use by another polyalign process ({holder}). Two processes "
                               f"on one run would overwrite each other's checkpoints and logs: wait for it to "
                               f"finish or stop it first. (A process that was killed holds no lock.)") from None
        os.close(fd)  # a file system without locks (some network mounts)
        warnings.warn(f"cannot lock {path} ({exc.strerror}); make sure no other process uses {run_dir}",
                      stacklevel=2)
        return None
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now().isoformat(timespec="seconds"),
              "command": " ".join(["polyalign" if program == "__main__.py" else program, *sys.argv[1:]])}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode("utf-8"), 0)
    _HELD.add(fd)
    return fd


@contextmanager
def hold_run_dir(run_dir: Path, dist: DistInfo) -> Iterator[None]:
    """Hold the lock of ``run_dir`` (taken by rank 0) for the ``with`` block. When rank 0 cannot
    take it, every rank stops with its message (the others would otherwise wait for rank 0 forever)."""
    fd, failure = None, None
    if dist.is_main:
        try:
            fd = lock_run_dir(run_dir)
        except Exception as exc:  # noqa: BLE001 - re-raised below, after every rank has heard of it
            failure = exc
    refusal = broadcast_from_main(None if failure is None else str(failure))
    if failure is not None:
        raise failure
    if refusal is not None:
        raise RunBusyError(refusal)
    try:
        yield
    finally:
        if fd is not None:
            _HELD.discard(fd)
            os.close(fd)  # closing the descriptor releases the flock
