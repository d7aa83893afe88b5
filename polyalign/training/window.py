"""Gradient accumulation over a window of ``train.accumulate`` micro-batches.

- ``negatives: window`` (GradCache, Gao et al. 2021): embed every micro-batch without a graph,
  compute the loss once over the whole window's embeddings (gathered over processes), keep the
  gradient of the loss with respect to each embedding, then embed each micro-batch again with
  a graph and backpropagate those cached gradients. Negatives (and Symile's N² tuples) span the
  window, and the loss and gradients equal those of one batch of the window's size, at the
  memory of one micro-batch plus the window's embeddings. The second pass replays the torch
  RNG state of the first (dropout draws the same masks) and the modality-dropout masks drawn
  for it; running statistics (BatchNorm) are updated by the second pass only.
- ``negatives: micro``: the loss of each micro-batch on its own, backpropagated at once (the
  gradients of the mean of the micro-batch losses; negatives never leave their micro-batch).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from polyalign.core.batch import Batch
from polyalign.core.buffers import kept_buffers
from polyalign.core.loss import LossOutput, Metric


class Stepper(Protocol):
    """What accumulation needs of the trainer's stepper (``training.step.Stepper``)."""

    model: nn.Module
    device: torch.device

    def train_present(self, batch: Batch) -> dict[str, torch.Tensor]: ...

    def embed(self, batch: Batch, present: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    def apply_loss(self, emb: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> LossOutput: ...

    def backward(self, loss: torch.Tensor) -> None: ...

    def grad_sync(self, sync: bool) -> contextlib.AbstractContextManager[None]: ...


@dataclass
class StepRecord:
    """What one optimizer step left on the device, read back at the trainer's next check."""

    loss: torch.Tensor  # the step's loss (detached)
    metrics: dict[str, Metric]  # the loss plugin's metrics (of the window, or of its last micro-batch)
    embeddings_finite: dict[str, torch.Tensor]  # per modality: every embedding of the step is finite
    grad_norm: torch.Tensor = field(default_factory=lambda: torch.tensor(0.0))  # set by the update


def _torch_rng(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The CPU and (on CUDA) device RNG states: what dropout and friends draw from."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_torch_rng(state: tuple[torch.Tensor, torch.Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _all_finite(emb: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {m: torch.isfinite(z).all() for m, z in emb.items()}


def micro_negatives(stepper: Stepper, window: list[Batch]) -> StepRecord:
    """Loss and backward per micro-batch (``negatives: micro``; also a window of one)."""
    losses, finite = [], {}
    for k, batch in enumerate(window):
        batch = batch.to(stepper.device, non_blocking=True)
        present = stepper.train_present(batch)
        with stepper.grad_sync(k == len(window) - 1):
            emb = stepper.embed(batch, present)
            out = stepper.apply_loss(emb, present)
            stepper.backward(out.loss / len(window))
        losses.append(out.loss.detach())
        for m, ok in _all_finite(emb).items():
            finite[m] = ok & finite[m] if m in finite else ok
    return StepRecord(torch.stack(losses).mean(), out.metrics, finite)


def window_negatives(stepper: Stepper, window: list[Batch]) -> StepRecord:
    """GradCache over the window (``negatives: window``): one loss over every micro-batch."""
    device = stepper.device
    replay: list[tuple[dict[str, torch.Tensor], tuple]] = []  # per micro-batch: masks, RNG state
    cached: list[dict[str, torch.Tensor]] = []
    with torch.no_grad(), kept_buffers(stepper.model):
        for batch in window:
            batch = batch.to(device, non_blocking=True)
            present = stepper.train_present(batch)
            replay.append((present, _torch_rng(device)))
            cached.append(stepper.embed(batch, present))
    names = list(cached[0])
    emb = {m: torch.cat([c[m] for c in cached]).requires_grad_() for m in names}
    present = {m: torch.cat([p[m] for p, _ in replay]) for m in replay[0][0]}
    del cached
    out = stepper.apply_loss(emb, present)
    stepper.backward(out.loss)  # gradients of the embeddings, and of the loss's own parameters
    after_loss = _torch_rng(device)
    sizes = [len(b) for b in window]
    grads = {m: (z.grad if z.grad is not None else torch.zeros_like(z)).split(sizes) for m, z in emb.items()}
    for k, (batch, (present_k, rng)) in enumerate(zip(window, replay)):
        _set_torch_rng(rng, device)
        with stepper.grad_sync(k == len(window) - 1):
            again = stepper.embed(batch.to(device, non_blocking=True), present_k)
            pairs = [(again[m], grads[m][k]) for m in names if again[m].requires_grad]
            if pairs:
                torch.autograd.backward([z for z, _ in pairs], [g for _, g in pairs])
    _set_torch_rng(after_loss, device)
    return StepRecord(out.loss.detach(), out.metrics, _all_finite(emb))
