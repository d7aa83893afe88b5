"""One training step: embed a batch, apply the loss, check it, and update the weights."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from polyalign.core.batch import Batch
from polyalign.core.device import autocast_for
from polyalign.core.errors import PluginError, PolyalignError
from polyalign.core.loss import LossOutput, Temperature, check_loss_output, clamp_temperatures
from polyalign.core.model import MultiModalModel
from polyalign.core.recipe import Recipe

from .distributed import all_reduce_mean_grads, gather_batch


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


class Stepper:
    """Computes losses and applies optimizer steps for one run.

    ``forward_model`` is the model as called (wrapped by DDP or ``torch.compile`` when asked);
    ``model`` the plain one, whose parameters are named in error messages.
    """

    def __init__(self, recipe: Recipe, model: MultiModalModel, forward_model: nn.Module, loss_fn: nn.Module,
                 optimizer: torch.optim.Optimizer, scheduler: Any, device: torch.device):
        self.recipe, self.model, self.forward_model, self.loss_fn = recipe, model, forward_model, loss_fn
        self.optimizer, self.scheduler, self.device = optimizer, scheduler, device
        self.loss_name = "+".join(n.plugin for n in recipe.losses)

    def loss(self, batch: Batch, train: bool, where: str) -> LossOutput:
        """Embed a batch and apply the loss (on the global batch when distributed); ``where``
        (``step 12``, ``validation after step 11``) locates a non-finite loss in its message."""
        present = drop_modalities(batch.present, self.recipe.missing.train_rate) if train else batch.present
        with autocast_for(self.recipe.train.precision, self.device):
            emb = self.forward_model(batch.inputs, present)
        emb = {m: z.float() for m, z in emb.items()}
        loss_present = self.model.loss_present(present)
        if self.recipe.train.gather == "global":
            emb, loss_present = gather_batch(emb, loss_present)
        out = check_loss_output(self.loss_fn(emb, loss_present), self.loss_name)
        if train and torch.is_grad_enabled() and not out.loss.requires_grad:
            raise PluginError(f"loss plugin {self.loss_name!r} returned a loss that does not depend on the "
                              f"embeddings (no gradient): keep it a tensor computed from them (no .item(), "
                              f".detach() or torch.tensor(...))")
        if not torch.isfinite(out.loss):
            bad = [m for m, z in emb.items() if not torch.isfinite(z).all()]
            bad_in = [m for m, x in batch.inputs.items()
                      if any(t.is_floating_point() and not torch.isfinite(t).all()
                             for t in (x.values() if isinstance(x, dict) else [x]))]
            raise NonFiniteError(
                f"{where}: the loss is {float(out.loss.detach())} (terms: "
                f"{ {k: round(float(v), 4) for k, v in out.metrics.items()} }); non-finite embeddings in: "
                f"{', '.join(bad) or 'none'}; non-finite input values in: {', '.join(bad_in) or 'none'}")
        return out

    def nonfinite_grads(self) -> str:
        """Names of the parameters whose gradient holds NaN/Inf (with their modalities)."""
        named = [(f"model.{n}", p) for n, p in self.model.named_parameters()]
        named += [(f"loss.{n}", p) for n, p in self.loss_fn.named_parameters()]
        bad = [n for n, p in named if p.grad is not None and not torch.isfinite(p.grad).all()]
        mods = sorted({n.split(".")[2] for n in bad
                       if n.startswith(("model.encoders.", "model.heads.", "model.norms."))})
        shown = ", ".join(bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
        return f"{shown or 'none'} (modalities: {', '.join(mods) or 'none'})"

    def update(self, terms: dict[str, float], where: str) -> None:
        """Average the loss's gradients across processes, check and clip the gradient norm, step
        the optimizer and scheduler, clear the gradients and clamp the temperatures."""
        cfg = self.recipe.train
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        all_reduce_mean_grads(self.loss_fn)  # DDP averages only the model's gradients
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if not torch.isfinite(norm):
            bad = self.nonfinite_grads()
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteError(f"{where}: the gradient norm is {float(norm)} (loss terms: "
                                 f"{ {k: round(float(v), 4) for k, v in terms.items()} }); non-finite "
                                 f"gradients in: {bad}")
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grads_with_norm_(params, cfg.grad_clip, norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        clamp_temperatures(self.loss_fn)
