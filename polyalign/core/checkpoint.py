"""Checkpoints: safetensors weights + training state, written atomically, loaded safely."""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .errors import PolyalignError

WEIGHTS = "model.safetensors"
STATE = "state.pt"
STEP_PREFIX = "step-"
_STEP_DIR = re.compile(r"^step-(\d{8,})$")


class CheckpointError(PolyalignError):
    """A checkpoint could not be written or read."""


def describe_os_error(exc: OSError) -> str:
    """The OS error in words, with what to do when the disk is full."""
    text = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        text += " (the disk or quota is full: free some space, then continue with `polyalign train --resume RUN_DIR`)"
    return text


def _fsync_dir(directory: Path) -> None:
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


def _fsync_file(path: Path) -> None:
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
        _fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not write {path}: {describe_os_error(exc)}. The previous "
                              f"version of the file, if any, is unchanged.") from exc


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def _swap_in(tmp: Path, directory: Path) -> None:
    """Replace ``directory`` by the complete folder ``tmp`` using renames only.

    Between the two renames the previous version is ``.<name>.old``, which
    :func:`resolve_checkpoint` falls back to, so a kill at any instant leaves one loadable.
    """
    old = directory.with_name(f".{directory.name}.old")
    _fsync_dir(tmp)
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
    os.replace(tmp, directory)
    _fsync_dir(directory.parent)
    shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(directory: Path, weights: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Write ``weights`` (safetensors) and ``state`` (torch, tensors/plain types only) to ``directory``.

    The files go to a temporary folder that replaces ``directory`` by renames only, so a
    crash at any point leaves either the old or the new checkpoint loadable.
    """
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(_contiguous(weights), str(tmp / WEIGHTS))
        _fsync_file(tmp / WEIGHTS)
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(tmp / STATE, buf.getvalue())
        _swap_in(tmp, directory)
    except (OSError, CheckpointError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        cause = exc.__cause__ if isinstance(exc, CheckpointError) and isinstance(exc.__cause__, OSError) else exc
        reason = describe_os_error(cause) if isinstance(cause, OSError) else str(cause)
        raise CheckpointError(f"could not save checkpoint {directory}: {reason}. "
                              f"The last complete checkpoint is kept.") from exc


def link_checkpoint(source: Path, directory: Path) -> None:
    """Make ``directory`` a copy of the complete checkpoint ``source`` (hard links where the
    file system allows: checkpoint files are never modified in place), swapped in atomically."""
    source, directory = Path(source), Path(directory)
    tmp = directory.with_name(f".{directory.name}.tmp")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name in (WEIGHTS, STATE):
            try:
                os.link(source / name, tmp / name)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.ENOENT):
                    raise
                shutil.copy2(source / name, tmp / name)
                _fsync_file(tmp / name)
        _swap_in(tmp, directory)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not write checkpoint {directory} (from {source}): {describe_os_error(exc)}. "
                              f"The last complete checkpoint is kept.") from exc


def step_checkpoint_name(step: int) -> str:
    """``step-00000120`` for step 120 (names sort in step order)."""
    return f"{STEP_PREFIX}{step:08d}"


def step_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every complete ``step-*`` checkpoint under ``root``, oldest first."""
    found = []
    if Path(root).is_dir():
        for child in Path(root).iterdir():
            match = _STEP_DIR.match(child.name)
            if match and (child / WEIGHTS).is_file() and (child / STATE).is_file():
                found.append((int(match.group(1)), child))
    return sorted(found)


def prune_step_checkpoints(root: Path, keep: int) -> list[Path]:
    """Delete all but the ``keep`` newest step checkpoints (and leftovers of interrupted
    saves of step checkpoints); return what was deleted."""
    root = Path(root)
    doomed = [path for _, path in step_checkpoints(root)[:-keep or None]]
    doomed += [p for p in root.glob(f".{STEP_PREFIX}*") if p.is_dir()]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def has_checkpoint(directory: Path) -> bool:
    """Whether ``directory`` (or its previous version kept mid-swap) holds a checkpoint."""
    try:
        resolve_checkpoint(directory)
        return True
    except CheckpointError:
        return False


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint a resume continues from: ``last`` (or its previous version kept
    mid-swap), else the newest ``step-*`` one; None when the run saved none."""
    root = Path(root)
    if has_checkpoint(root / "last"):
        return resolve_checkpoint(root / "last")
    steps = step_checkpoints(root)
    return steps[-1][1] if steps else None


def resolve_checkpoint(directory: Path) -> Path:
    """``directory``, or its previous version if a crash interrupted the swap."""
    directory = Path(directory)
    if (directory / WEIGHTS).is_file():
        return directory
    old = directory.with_name(f".{directory.name}.old")
    if (old / WEIGHTS).is_file():
        return old
    raise CheckpointError(f"no checkpoint at {directory} (expected {WEIGHTS} inside)")


def load_weights(directory: Path) -> dict[str, torch.Tensor]:
    """The safetensors weights of a checkpoint directory."""
    path = resolve_checkpoint(directory) / WEIGHTS
    try:
        return load_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"{path} is not a valid safetensors file: {exc}") from exc


def load_state(directory: Path) -> dict[str, Any]:
    """The training state of a checkpoint (``weights_only`` unpickling: no code can run)."""
    path = resolve_checkpoint(directory) / STATE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: cannot resume from this checkpoint") from None
    except Exception as exc:
        raise CheckpointError(
            f"refused to load {path}: it is not a plain training-state file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). polyalign only loads tensors and plain "
            f"values, never pickled code.") from exc
