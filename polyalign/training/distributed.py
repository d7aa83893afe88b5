"""Rank/world helpers and gather-with-gradient for negatives across processes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from polyalign.core.errors import PolyalignError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def _slurm_to_torch_env() -> None:
    """Under ``srun`` (one task per GPU, no torchrun) give torch the ranks Slurm assigned."""
    tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS", "1"))
    if "WORLD_SIZE" in os.environ or tasks <= 1:
        return
    if "MASTER_ADDR" not in os.environ:
        raise PolyalignError(
            f"srun started {tasks} tasks, but MASTER_ADDR is not set, so they cannot find each other: in the batch "
            f"script, before srun: export MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1) "
            f"MASTER_PORT=29500 (scripts/slurm-train.sbatch does it), or use polyalign train --launcher slurm")
    os.environ.setdefault("MASTER_PORT", "29500")
    os.environ.update(WORLD_SIZE=str(tasks), RANK=os.environ["SLURM_PROCID"],
                      LOCAL_RANK=os.environ.get("SLURM_LOCALID", "0"))


def init_distributed(device_kind: str) -> DistInfo:
    """Join the process group torchrun, submitit or srun describes in the environment (no-op in one process)."""
    _slurm_to_torch_env()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_kind == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward sums the gradient over ranks and keeps this rank's rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad)  # works on gloo too, unlike reduce_scatter
        start = dist.get_rank() * ctx.rows
        return grad[start:start + ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0, keeping the gradient path to each rank.

    Every rank must pass the same number of rows (the trainer's sampler pads to ensure it).
    """
    if not _active():
        return x
    return _GatherWithGrad.apply(x)


def gather_batch(embeddings: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None
                 ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """Every rank's embeddings (with gradient) and masks, so negatives span the global batch.

    Each rank then computes the loss of the whole global batch; the gather's backward sums the
    ranks' identical gradients and DDP's averaging undoes that sum, so parameter gradients equal
    those of one process holding the whole batch.
    """
    if not _active():
        return embeddings, present
    emb = {m: gather_with_grad(z) for m, z in embeddings.items()}
    return emb, None if present is None else {m: gather_no_grad(p) for m, p in present.items()}


def all_reduce_mean_grads(module: torch.nn.Module) -> None:
    """Average the gradients of ``module``'s parameters over ranks (for parameters outside DDP)."""
    if not _active():
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def barrier() -> None:
    """Wait for every process of the run (a no-op in a single-process run)."""
    if _active():
        dist.barrier()


def cpu_group() -> Any:
    """A process group for small host-side collectives that must not wait for the device: the default group
    under gloo, a gloo group beside it under nccl (every process must call it; None in one process)."""
    if not _active():
        return None
    return dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")


def max_across_ranks(value: int, group: Any) -> int:
    """The largest of every rank's ``value`` (identity in one process); ``group`` from :func:`cpu_group`."""
    if not _active():
        return value
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return int(t.item())


def finish_distributed() -> None:
    """Wait for every rank, then leave the process group (no-op in one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (e.g. masks) from every rank along dim 0."""
    if not _active():
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def mean_across_ranks(values: dict[str, float]) -> dict[str, float]:
    """Average float metrics over ranks (identity in one process)."""
    if not _active() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def broadcast_from_main(value: Any) -> Any:
    """Rank 0's ``value`` (a run directory, an error message...) on every rank (identity in one process)."""
    if not _active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
