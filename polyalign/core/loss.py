"""The loss contract: a module owning its temperature, a loss with metrics, a scoring rule."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

MAX_LOGIT_SCALE = 100.0


@dataclass
class LossOutput:
    """A scalar loss and named float metrics (per-term losses, temperature, ...)."""

    loss: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


class LossConfig(BaseModel):
    """Options every loss shares: the initial temperature and whether it is learned."""

    model_config = ConfigDict(extra="forbid")
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
        metrics: dict[str, float] = {}
        for name, term in self.terms.items():
            out = term(embeddings, present)
            total = total + self.weights[name] * out.loss
            metrics[f"{name}/loss"] = float(out.loss.detach())
            metrics.update({f"{name}/{k}": v for k, v in out.metrics.items()})
        return LossOutput(total, metrics)

    def score(self, queries: dict[str, torch.Tensor], candidates: torch.Tensor,
              target: str) -> torch.Tensor:
        return next(iter(self.terms.values())).score(queries, candidates, target)
