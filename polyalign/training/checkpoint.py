"""Writing checkpoints: safetensors weights + training state, swapped in atomically, pruned.

Reading them back safely is :mod:`polyalign.files.weights`, shared with evaluation and inference.
"""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from polyalign.files.atomic import (
    RESUME,
    WriteError,
    atomic_write_bytes,
    describe_os_error,
    fsync_dir,
    fsync_file,
    save_tensors,
    write_failure,
)
from polyalign.files.weights import STATE, WEIGHTS, CheckpointError, has_checkpoint, resolve_checkpoint

STEP_PREFIX = "step-"
_STEP_DIR = re.compile(r"^step-(\d{8,})$")


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def _swap_in(tmp: Path, directory: Path) -> None:
    """Replace ``directory`` by the complete folder ``tmp`` using renames only.

    Between the two renames the previous version is ``.<name>.old``, which
    :func:`resolve_checkpoint` falls back to, so a kill at any instant leaves one loadable.
    """
    old = directory.with_name(f".{directory.name}.old")
    fsync_dir(tmp)
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
    os.replace(tmp, directory)
    fsync_dir(directory.parent)
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
        save_tensors(_contiguous(weights), tmp / WEIGHTS)
        fsync_file(tmp / WEIGHTS)
        buf = io.BytesIO()
        torch.save(state, buf)
        atomic_write_bytes(tmp / STATE, buf.getvalue())
        _swap_in(tmp, directory)
    except (OSError, WriteError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not save checkpoint {directory}: {write_failure(exc, RESUME)}. "
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
                fsync_file(tmp / name)
        _swap_in(tmp, directory)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not write checkpoint {directory} (from {source}): "
                              f"{describe_os_error(exc, RESUME)}. The last complete checkpoint is kept.") from exc


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
    """Delete all but the ``keep`` newest complete step checkpoints, and whatever an interrupted
    save or an interrupted pruning left (a ``step-*`` folder missing a file, ``.step-*`` folders);
    return what was deleted."""
    root = Path(root)
    kept = {path for _, path in step_checkpoints(root)[-keep:]}
    doomed = sorted(p for p in root.glob(f"{STEP_PREFIX}*") if _STEP_DIR.match(p.name) and p.is_dir() and p not in kept)
    doomed += [p for p in root.glob(f".{STEP_PREFIX}*") if p.is_dir()]
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint a resume continues from: ``last`` (or its previous version kept
    mid-swap), else the newest ``step-*`` one; None when the run saved none."""
    root = Path(root)
    if has_checkpoint(root / "last"):
        return resolve_checkpoint(root / "last")
    steps = step_checkpoints(root)
    return steps[-1][1] if steps else None
