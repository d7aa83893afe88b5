"""One optimizer step: embed a window of micro-batches, apply the loss, backpropagate, update.

Nothing in a step reads a value back from the device: the loss, its metrics and the NaN/Inf
flags stay tensors in a :class:`StepRecord` until the trainer's next check (every
``log_every`` steps, at checkpoints and at epoch ends); a non-finite step is skipped on the
device by the fused optimizer (its ``found_inf`` flag, as ``torch.amp.GradScaler`` uses it).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from polyalign.core.batch import Batch
from polyalign.core.device import autocast_for
from polyalign.core.errors import PolyalignError
from polyalign.core.loss import LossOutput, Temperature, check_loss_output, clamp_temperatures, float_metrics
from polyalign.core.model import MultiModalModel
from polyalign.core.recipe import Recipe

from .distributed import all_reduce_mean_grads, gather_batch
from .window import StepRecord, micro_negatives, window_negatives


class NonFiniteError(PolyalignError):
    """The loss or a gradient became NaN/Inf."""


def drop_modalities(present: dict[str, torch.Tensor], rates: dict[str, float]) -> dict[str, torch.Tensor]:
    """Train-time modality dropout: mark each row of ``m`` absent with probability ``rates[m]``."""
    if not rates:
        return present
    out = dict(present)
    for m, rate in rates.items():
        if m in out and rate > 0:
            out[m] = out[m] & (torch.rand(out[m].shape[0]) >= rate).to(out[m].device)
    return out


def temperature_of(loss: nn.Module) -> float | None:
    """τ of the first :class:`Temperature` in the loss (for logging)."""
    for m in loss.modules():
        if isinstance(m, Temperature):
            return m.tau
    return None


def step_unless(optimizer: torch.optim.Optimizer, skip: torch.Tensor) -> None:
    """``optimizer.step()``, skipped on the device where ``skip`` is true (no host read-back).

    The optimizer must be fused: its kernels take ``found_inf`` (the attribute
    ``torch.amp.GradScaler`` sets) and then leave the weights and the optimizer state unchanged.
    """
    optimizer.found_inf = skip.float()  # type: ignore[attr-defined]
    optimizer.grad_scale = None  # type: ignore[attr-defined]
    try:
        optimizer.step()
    finally:
        del optimizer.found_inf, optimizer.grad_scale  # type: ignore[attr-defined]


class Stepper:
    """Computes losses and applies optimizer steps for one run.

    ``forward_model`` is the model as called (wrapped by DDP or ``torch.compile`` when asked);
    ``model`` the plain one, whose parameters are named in error messages. ``scaler`` is the
    gradient scaler of ``precision: fp16`` (None otherwise).
    """

    def __init__(self, recipe: Recipe, model: MultiModalModel, forward_model: nn.Module, loss_fn: nn.Module,
                 optimizer: torch.optim.Optimizer, scheduler: Any, device: torch.device,
                 scaler: torch.amp.GradScaler | None = None):
        self.recipe, self.model, self.forward_model, self.loss_fn = recipe, model, forward_model, loss_fn
        self.optimizer, self.scheduler, self.device, self.scaler = optimizer, scheduler, device, scaler
        self.loss_name = "+".join(n.plugin for n in recipe.losses)

    # -- the parts a step is made of (used by both accumulation modes in :mod:`.window`)
    def train_present(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The batch's masks after train-time modality dropout (drawn once per micro-batch)."""
        return drop_modalities(batch.present, self.recipe.missing.train_rate)

    def embed(self, batch: Batch, present: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The model's embeddings of a batch (under the run's autocast), at least float32."""
        with autocast_for(self.recipe.train.precision, self.device):
            emb = self.forward_model(batch.inputs, present)
        return {m: z.to(torch.promote_types(z.dtype, torch.float32)) for m, z in emb.items()}

    def apply_loss(self, emb: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> LossOutput:
        """The loss of embeddings (gathered over processes with ``gather: global``), checked."""
        loss_present = self.model.loss_present(present)
        if self.recipe.train.gather == "global":
            emb, loss_present = gather_batch(emb, loss_present)
        return check_loss_output(self.loss_fn(emb, loss_present), self.loss_name, torch.is_grad_enabled())

    def backward(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` (scaled by the fp16 gradient scaler when there is one)."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    @contextlib.contextmanager
    def grad_sync(self, sync: bool) -> Iterator[None]:
        """Under DDP, let a backward inside this block all-reduce the gradients only if ``sync``
        (the last micro-batch of a window); elsewhere a no-op."""
        if not sync and isinstance(self.forward_model, nn.parallel.DistributedDataParallel):
            with self.forward_model.no_sync():
                yield
        else:
            yield

    # -- one step
    def step(self, window: list[Batch]) -> StepRecord:
        """Forward and backward over the micro-batches of one optimizer step, then update."""
        self.optimizer.zero_grad(set_to_none=True)  # here, not after the update: a check may name bad grads
        window_mode = self.recipe.train.negatives == "window" and len(window) > 1
        record = (window_negatives if window_mode else micro_negatives)(self, window)
        self.update(record)
        return record

    def update(self, record: StepRecord) -> None:
        """Average the loss's gradients across processes, clip the gradient norm, step the
        optimizer (skipped on the device when the loss or the norm is not finite) and the
        scheduler, and clamp the temperatures."""
        cfg = self.recipe.train
        all_reduce_mean_grads(self.loss_fn)  # DDP/FSDP average only the model's gradients
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if isinstance(norm, DTensor):  # sharded gradients (strategy: fsdp)
            norm = norm.full_tensor()
        record.grad_norm = norm.detach()
        finite = torch.isfinite(norm)
        if cfg.grad_clip is not None:  # a non-finite norm leaves the gradients as they are, for the report
            torch.nn.utils.clip_grads_with_norm_(params, cfg.grad_clip, torch.where(finite, norm, 0.0))
        if self.scaler is not None:  # skips inf/NaN gradients itself (and lowers the scale)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            step_unless(self.optimizer, ~(finite & torch.isfinite(record.loss)))
        self.scheduler.step()
        clamp_temperatures(self.loss_fn)

    def counts_as_bad(self, loss: float, grad_norm: float) -> bool:
        """Whether a step with these read-back values is a NaN/Inf step (``train.on_nan``).

        Under fp16 an overflowing gradient is the scaler's business (it skips the step and lowers
        the scale), so only a non-finite loss counts.
        """
        return not math.isfinite(loss) or (self.scaler is None and not math.isfinite(grad_norm))

    def rewind_schedule(self, steps: int) -> None:
        """Undo ``steps`` scheduler steps (of steps that turned out to be skipped)."""
        self.scheduler.last_epoch -= steps + 1
        self.scheduler.step()

    # -- reports
    def describe_bad_step(self, record: StepRecord, loss: float, grad_norm: float, where: str,
                          window: list[Batch] | None) -> str:
        """What went wrong in a non-finite step. ``window`` is its micro-batches when this is the
        newest step (then its inputs and gradients are still at hand), else None."""
        terms = {k: round(v, 4) for k, v in float_metrics(record.metrics).items()}
        if not math.isfinite(loss):
            bad = [m for m, ok in record.embeddings_finite.items() if not bool(ok)]
            if window is None:
                inputs = "not checked (this step was found at a later check; train.log_every=1 checks every step)"
            else:
                inputs = ", ".join(m for m in self.model.modalities if any(_nonfinite_input(b, m) for b in window))
            return (f"{where}: the loss is {loss} (terms: {terms}); non-finite embeddings in: "
                    f"{', '.join(bad) or 'none'}; non-finite input values in: {inputs or 'none'}")
        grads = (self.nonfinite_grads() if window is not None else
                 "not kept (this step was found at a later check; train.log_every=1 checks every step)")
        return f"{where}: the gradient norm is {grad_norm} (loss terms: {terms}); non-finite gradients in: {grads}"

    def nonfinite_grads(self) -> str:
        """Names of the parameters whose gradient holds NaN/Inf (with their modalities)."""
        named = [(f"model.{n}", p) for n, p in self.model.named_parameters()]
        named += [(f"loss.{n}", p) for n, p in self.loss_fn.named_parameters()]
        bad = [n for n, p in named if p.grad is not None and not torch.isfinite(p.grad).all()]
        mods = sorted({n.split(".")[2] for n in bad
                       if n.startswith(("model.encoders.", "model.heads.", "model.norms."))})
        shown = ", ".join(bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
        return f"{shown or 'none'} (modalities: {', '.join(mods) or 'none'})"

    @torch.no_grad()
    def validation_loss(self, batch: Batch, where: str) -> torch.Tensor:
        """The loss of a validation batch; a non-finite one raises :class:`NonFiniteError`."""
        emb = self.embed(batch, batch.present)
        out = self.apply_loss(emb, batch.present)
        if not torch.isfinite(out.loss):
            record = StepRecord(out.loss, out.metrics, {m: torch.isfinite(z).all() for m, z in emb.items()})
            raise NonFiniteError(self.describe_bad_step(record, float(out.loss), 0.0, where, [batch]))
        return out.loss.detach()


def _nonfinite_input(batch: Batch, m: str) -> bool:
    x = batch.inputs.get(m)
    if x is None:
        return False
    tensors = x.values() if isinstance(x, dict) else [x]
    return any(t.is_floating_point() and not torch.isfinite(t).all() for t in tensors)
