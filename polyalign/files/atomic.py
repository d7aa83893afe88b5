"""Writing files so that a crash or a full disk never leaves a half-written one."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Any

from polyalign.core.errors import PolyalignError


class WriteError(PolyalignError):
    """A file could not be written; the previous version, if any, is unchanged."""


RESUME = "then continue with `polyalign train --resume RUN_DIR`"
"""What to do after freeing space when a training run's write failed (``then`` of :func:`describe_os_error`)."""


def describe_os_error(exc: OSError, then: str = "then run the command again") -> str:
    """The OS error in words, with what to do when the disk is full, a file is over the size limit
    (``ulimit -f``) or a name is over the file system's limit."""
    text = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        text += f" (the disk or quota is full: free some space, {then})"
    elif exc.errno == errno.EFBIG:
        text += f" (a file would exceed this process's file size limit, `ulimit -f`: raise the limit, {then})"
    elif exc.errno == errno.ENAMETOOLONG:
        text += " (a file or folder name is longer than the file system allows, usually 255 bytes: choose a " \
                "shorter name or folder)"
    return text


def os_error_message(exc: OSError, then: str = "then run the command again") -> str:
    """``FILE: what happened (what to do)`` for an OS error reaching the user."""
    where = f"{exc.filename}: " if exc.filename else ""
    return where + describe_os_error(exc, then)


def write_failure(exc: OSError | WriteError, then: str = "then run the command again") -> str:
    """Why a write failed: the OS error in words (also the one behind a :class:`WriteError`)."""
    cause = exc.__cause__ if isinstance(exc, WriteError) and isinstance(exc.__cause__, OSError) else exc
    return describe_os_error(cause, then) if isinstance(cause, OSError) else str(cause)


_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def save_tensors(tensors: dict[str, Any], path: Path) -> None:
    """Write ``tensors`` as a safetensors file at ``path``; a failure of the file system is an
    :class:`OSError` (safetensors reports it as a ``SafetensorError`` naming the OS error)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path))
    except SafetensorError as exc:
        found = _OS_ERROR.search(str(exc))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(path)) from exc


def fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush ``path``'s contents to disk."""
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WriteError(f"could not write {path}: {describe_os_error(exc)}. The previous "
                         f"version of the file, if any, is unchanged.") from exc


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
