"""The loss contract: a module owning its temperature, a loss with metrics, a scoring rule."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from .errors import PluginError

MAX_LOGIT_SCALE = 100.0


Metric = float | torch.Tensor


@dataclass
class LossOutput:
    """A scalar loss and named metrics (per-term losses, temperature, ...).

    A metric is a number or a detached 0-dim tensor; tensors stay on the device until the
    trainer logs them, so a training step never waits for the device to report a metric.
    """

    loss: torch.Tensor
    metrics: dict[str, Metric] = field(default_factory=dict)


class LossConfig(BaseModel):
    """Options every loss shares: the initial temperature and whether it is learned."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    temperature: float = Field(0.07, gt=0, description="initial temperature τ")
    learn_temperature: bool = Field(True, description="learn log(1/τ) with the model")


class Temperature(nn.Module):
    """Learnable ``log(1/τ)``; the trainer clamps ``1/τ <= 100`` after each optimizer step."""

    def __init__(self, tau: float = 0.07, learnable: bool = True,
                 max_scale: float = MAX_LOGIT_SCALE):
        super().__init__()
        self.max_scale = max_scale
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / tau)), requires_grad=learnable)

    @property
    def scale(self) -> torch.Tensor:
        """``1/τ`` as a tensor (differentiable)."""
        return self.log_scale.exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep ``1/τ`` at or below ``max_scale``."""
        self.log_scale.clamp_(max=math.log(self.max_scale))


def clamp_temperatures(module: nn.Module) -> None:
    """Clamp every :class:`Temperature` inside ``module``."""
    for m in module.modules():
        if isinstance(m, Temperature):
            m.clamp_()


class Loss(nn.Module):
    """Base class for loss plugins.

    ``forward(embeddings, present)``: ``embeddings[m]`` is ``(N, d)``; ``present[m]`` a bool
    ``(N,)`` mask (None = all present); returns :class:`LossOutput`.
    ``score(queries, candidates, target)``: ``queries[m]`` is ``(Q, d)`` for each query
    modality, ``candidates`` ``(C, d)`` embeddings of ``target``; returns ``(Q, C)`` scores.
    """

    def forward(self, embeddings: dict[str, torch.Tensor],
                present: dict[str, torch.Tensor] | None = None) -> LossOutput:  # pragma: no cover
        raise TypeError(f"loss {type(self).__name__} does not define forward()")

    def score(self, queries: dict[str, torch.Tensor], candidates: torch.Tensor,
              target: str) -> torch.Tensor:  # pragma: no cover
        raise TypeError(f"loss {type(self).__name__} does not define score()")


def check_loss_output(out: Any, plugin: str) -> LossOutput:
    """``out`` if it keeps the loss contract (a :class:`LossOutput` holding a scalar floating
    tensor and number metrics), else a :class:`PluginError` naming ``plugin`` and what it returned."""
    def fail(got: str) -> PluginError:
        return PluginError(f"loss plugin {plugin!r} returned {got}; forward() must return "
                           f"LossOutput(loss=<0-dim float tensor>, metrics={{name: float or "
                           f"detached 0-dim tensor}})")

    if not isinstance(out, LossOutput):
        raise fail(f"a {type(out).__name__}")
    loss = out.loss
    if not isinstance(loss, torch.Tensor):
        raise fail(f"a loss of type {type(loss).__name__}")
    if loss.dim() != 0:
        raise fail(f"a loss of shape {tuple(loss.shape)} (reduce it to a scalar, e.g. with .mean())")
    if not loss.is_floating_point():
        raise fail(f"a loss of dtype {loss.dtype}")
    if not isinstance(out.metrics, dict):
        raise fail(f"metrics of type {type(out.metrics).__name__}")
    for key, value in out.metrics.items():
        if isinstance(value, torch.Tensor):
            if value.dim() != 0 or value.requires_grad or value.is_complex():
                raise fail(f"metric {key!r} = Tensor of shape {tuple(value.shape)}"
                           f"{' requiring grad' if value.requires_grad else ''} (a metric is a number or a "
                           f"detached 0-dim real tensor: use t.detach(), reduced to one value)")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail(f"metric {key!r} = {type(value).__name__} {str(value)[:40]} (a metric is a number or "
                       f"a detached 0-dim tensor)")
    return out


def float_metrics(metrics: dict[str, Metric]) -> dict[str, float]:
    """``metrics`` as Python floats, reading every tensor back from the device at once."""
    out = {k: float(v) for k, v in metrics.items() if not isinstance(v, torch.Tensor)}
    by_device: dict[torch.device, list[str]] = {}
    for k, v in metrics.items():
        if isinstance(v, torch.Tensor):
            by_device.setdefault(v.device, []).append(k)
    for keys in by_device.values():
        out.update(zip(keys, torch.stack([metrics[k].detach().double() for k in keys]).tolist()))
    return {k: out[k] for k in metrics}


def full_present(embeddings: dict[str, torch.Tensor],
                 present: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """``present`` with an all-True mask for every modality it leaves out."""
    present = dict(present or {})
    for m, z in embeddings.items():
        if m not in present:
            present[m] = torch.ones(z.shape[0], dtype=torch.bool, device=z.device)
    return present


class WeightedLoss(Loss):
    """A weighted sum of losses (a recipe's list under ``loss:``); scores with the first."""

    def __init__(self, terms: dict[str, Loss], weights: dict[str, float]):
        super().__init__()
        self.terms = nn.ModuleDict(terms)
        self.weights = dict(weights)

    def forward(self, embeddings: dict[str, torch.Tensor],
                present: dict[str, torch.Tensor] | None = None) -> LossOutput:
        total = 0.0
        metrics: dict[str, Metric] = {}
        for name, term in self.terms.items():
            out = check_loss_output(term(embeddings, present), name)
            total = total + self.weights[name] * out.loss
            metrics[f"{name}/loss"] = out.loss.detach()
            metrics.update({f"{name}/{k}": v for k, v in out.metrics.items()})
        return LossOutput(total, metrics)

    def score(self, queries: dict[str, torch.Tensor], candidates: torch.Tensor,
              target: str) -> torch.Tensor:
        return next(iter(self.terms.values())).score(queries, candidates, target)
