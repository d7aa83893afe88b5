"""The loss contract: a module owning its temperature, a loss with metrics, a scoring rule."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from .errors import PluginError, PolyalignError
from .gradient_balance import GradientBalance

MAX_LOGIT_SCALE = 100.0
"""``1/τ ≤ 100`` (τ ≥ 0.01), CLIP's ceiling: sharper logits of unit vectors only overfit the batch."""

MIN_LOGIT_SCALE = 1.0
"""``1/τ ≥ 1`` (τ ≤ 1), open_clip's floor. Logits of unit vectors scaled by ``1/τ`` lie within
``±1/τ``: below 1 every logit is within 2 of every other, the softmax over the candidates is close
to uniform whatever the embeddings, and the gradient (proportional to ``1/τ``) fades, so no run
learns there. The floor keeps a diverging optimiser (too high a learning rate) from driving ``1/τ``
to 0, where τ overflows and a metric such as ``1/scale`` divides by zero."""


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
    temperature: float = Field(0.07, ge=1 / MAX_LOGIT_SCALE, le=1 / MIN_LOGIT_SCALE,
                               description="initial temperature τ, in [0.01, 1] (1/τ is kept in [1, 100])")
    learn_temperature: bool = Field(True, description="learn log(1/τ) with the model")


class Temperature(nn.Module):
    """Learnable ``log(1/τ)``; the trainer keeps ``min_scale <= 1/τ <= max_scale`` after each
    optimizer step (default ``[MIN_LOGIT_SCALE, MAX_LOGIT_SCALE]``; see there why)."""

    def __init__(self, tau: float = 0.07, learnable: bool = True,
                 max_scale: float = MAX_LOGIT_SCALE, min_scale: float = MIN_LOGIT_SCALE):
        super().__init__()
        if not min_scale <= 1.0 / tau <= max_scale:
            raise PluginError(f"initial temperature τ = {tau:g} is outside [{1 / max_scale:g}, {1 / min_scale:g}]")
        self.max_scale, self.min_scale = max_scale, min_scale
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / tau)), requires_grad=learnable)

    @property
    def scale(self) -> torch.Tensor:
        """``1/τ`` as a tensor (differentiable)."""
        return self.log_scale.exp()

    @property
    def tau(self) -> float:
        """τ as a number, for metrics (never raises, even where ``1/τ`` has underflowed)."""
        return float(torch.exp(-self.log_scale.detach()))

    @torch.no_grad()
    def clamp_(self) -> None:
        """Keep ``1/τ`` within ``[min_scale, max_scale]``."""
        self.log_scale.clamp_(min=math.log(self.min_scale), max=math.log(self.max_scale))


def clamp_temperatures(module: nn.Module) -> None:
    """Clamp every :class:`Temperature` inside ``module``."""
    for m in module.modules():
        if isinstance(m, Temperature):
            m.clamp_()


class Loss(nn.Module):
    """Base class for loss plugins.

    ``forward(embeddings, present)``: ``embeddings[m]`` is ``(N, d)``; ``present[m]`` a bool
    ``(N,)`` mask (None = all present); returns :class:`LossOutput`.
    ``score_tuples(queries, candidates)`` (required): ``queries[m]`` is ``(Q, d)`` for each query
    modality, ``candidates[m]`` ``(C, d)`` for each candidate modality, row ``c`` of every one
    together being candidate ``c`` (text -> (video, audio)); returns ``(Q, C)`` scores. A loss whose
    rule ranks one candidate modality only sets ``tuple_candidates = False``.
    ``score(queries, candidates, target)`` is derived: ``score_tuples(queries, {target: candidates})``.
    ``inner_product_query(queries, target)``: whether the score reduces to an inner product
    with the candidate, which is what lets an index (``polyalign index``) serve the loss.
    ``logit_scale()``: the factor that turns the score into the logits the loss trains, which is
    how a weighted list of losses adds its terms' scores (a product of experts).
    """

    exact_inner_product: bool = False
    """True when ``score`` equals ``inner_product_query(queries, target) · candidate`` itself, not
    only in order: then a sum of such scores is one inner product too."""

    tuple_candidates: bool = True
    """Whether ``score_tuples`` ranks candidates made of several modalities; False refuses them with a
    message before ``score_tuples`` is called (retrieval then leaves tuple targets out)."""

    scores_in_a_sum: bool = True
    """Whether a weighted list of losses adds this term's score to its own (False for a
    regulariser, such as ``align_uniform``, which shapes the embeddings but is no expert)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "score" in cls.__dict__:
            raise PluginError(f"loss {cls.__qualname__} overrides score(queries, candidates, target), which is "
                              f"score_tuples(queries, {{target: candidates}}) for every loss: define "
                              f"score_tuples(queries, candidates) instead (docs/losses.md, 'Scoring')")

    def forward(self, embeddings: dict[str, torch.Tensor],
                present: dict[str, torch.Tensor] | None = None) -> LossOutput:  # pragma: no cover
        raise TypeError(f"loss {type(self).__name__} does not define forward()")

    def score_tuples(self, queries: dict[str, torch.Tensor],
                     candidates: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(Q, C)`` scores of candidate tuples (``candidates[m]`` ``(C, d)``) for each query tuple."""
        raise TypeError(f"loss {type(self).__name__} defines no scoring rule: define "
                        f"score_tuples(queries, candidates) (docs/losses.md, 'Scoring')")

    def score(self, queries: dict[str, torch.Tensor], candidates: torch.Tensor,
              target: str) -> torch.Tensor:
        """``(Q, C)`` scores of the candidates of ``target`` for each query tuple (``score_tuples`` with one)."""
        return self.score_tuples(queries, {target: candidates})

    def inner_product_query(self, queries: dict[str, torch.Tensor], target: str) -> torch.Tensor | None:
        """``(Q, d)`` vectors ``v`` such that ``score`` ranks every candidate ``c`` of ``target`` as
        ``v · c`` does (the score a non-decreasing function of it), or None when the score does not
        reduce to an inner product with the candidate (e.g. GRAM's volume): then an inner-product
        index cannot rank for this loss and ``polyalign search`` refuses to use one. The default
        is None; override it when the scoring rule allows it."""
        return None

    def step_flops(self, n: int, d: int, m: int) -> float | None:
        """Floating-point operations of one forward and backward pass on ``n`` tuples of ``m``
        modalities of size ``d`` (the count :mod:`polyalign.core.step_cost` turns into seconds and
        compares with CLIP's); None = not counted, and then no estimate is shown."""
        return None

    def logit_scale(self) -> torch.Tensor | float:
        """``1/τ``: the factor turning ``score`` into this loss's logits (its :class:`Temperature`
        attribute ``temperature``; 1 without one, e.g. a score that is a log-probability already)."""
        temperature = getattr(self, "temperature", None)
        return temperature.scale if isinstance(temperature, Temperature) else 1.0


def cannot_rank_tuples(plugin: str, candidates: list[str]) -> str:
    """The error for a loss asked to rank tuples when its scoring rule ranks one modality."""
    return (f"loss {plugin!r} ranks candidates of one modality (tuple_candidates = False), so it cannot rank "
            f"candidates made of {'+'.join(candidates)}; retrieve one modality at a time, or make its "
            f"score_tuples(queries, candidates) rank tuples (docs/losses.md, 'Scoring')")


def score_candidates(loss: nn.Module, queries: dict[str, torch.Tensor], candidates: dict[str, torch.Tensor],
                     plugin: str) -> torch.Tensor:
    """The loss's ``(Q, C)`` scores of candidate tuples for query tuples, checked for shape and NaN.

    Several candidate modalities need a loss that ranks tuples (``tuple_candidates``); ``plugin``
    names the loss in errors.
    """
    if not queries or not candidates:
        raise PolyalignError(f"scoring needs at least one query and one candidate modality; got queries "
                             f"{list(queries) or 'none'}, candidates {list(candidates) or 'none'}")
    for side, tensors in (("query", queries), ("candidate", candidates)):
        sizes = {m: int(z.shape[0]) for m, z in tensors.items()}
        if len(set(sizes.values())) != 1:
            raise PolyalignError(f"every {side} modality needs one row per {side}; got {sizes}")
    target = "+".join(candidates)
    if len(candidates) > 1 and not can_rank_tuples(loss):
        if isinstance(loss, WeightedLoss):  # name the term, and the way out
            plugin = next(k for k, t in loss.scoring_terms().items() if not can_rank_tuples(t))
            raise PluginError(cannot_rank_tuples(plugin, list(candidates)) + "; or score the weighted "
                              "sum with one term that can (score_with: true on its loss node)")
        raise PluginError(cannot_rank_tuples(plugin, list(candidates)))
    out = loss.score_tuples(queries, candidates)
    expected = (int(next(iter(queries.values())).shape[0]), int(next(iter(candidates.values())).shape[0]))
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PluginError(f"loss plugin {plugin!r}: score_tuples() returned {got}; expected {expected} "
                          f"(queries x candidates)")
    if torch.isnan(out).any():
        raise PluginError(f"loss plugin {plugin!r}: score_tuples() returned NaN scores for target {target!r} "
                          f"(ranks computed from them would be meaningless)")
    return out


def check_loss_output(out: Any, plugin: str, needs_grad: bool = False) -> LossOutput:
    """``out`` if it keeps the loss contract (a :class:`LossOutput` holding a scalar floating
    tensor, with a gradient when ``needs_grad``, and metrics that are numbers or detached 0-dim
    tensors), else a :class:`PluginError` naming ``plugin`` and what it returned."""
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
    if needs_grad and not loss.requires_grad:
        raise PluginError(f"loss plugin {plugin!r} returned a loss that does not depend on the embeddings (no "
                          f"gradient): keep it a tensor computed from them (no .item(), .detach() or "
                          f"torch.tensor(...))")
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
    """A weighted sum of losses (a recipe's list under ``loss:``).

    It scores as one model, with a product of experts: the sum over its terms of ``weight ·
    logit_scale() · score``, each term's logits as it trained them, so that [clip, symile] ranks
    with CLIP's pairwise and Symile's joint information together. ``score_with`` names one term
    to score with alone instead. Terms with ``scores_in_a_sum = False`` (regularisers) are left out.

    ``spaces`` (``{term: block}``; the default of a recipe's list, ``model.spaces: per_term``):
    the embeddings are the concatenation of ``n_spaces`` equal blocks, each normalised on its own
    (:class:`~polyalign.core.model.MultiModalModel` with ``spaces``), and each scoring term trains
    and scores on its own block, so that CLIP's pulling of every pair together does not flatten
    the products Symile reads, nor Symile's gradients bend CLIP's geometry. ``balance`` (the
    default with spaces, ``model.balance: gradients``) gives every such term the same pull on the
    shared encoders (:mod:`~polyalign.core.gradient_balance`). A term not in
    ``spaces`` (a regulariser) applies to every block (the mean over blocks). The summed score is
    still one inner product when every term's is: the query is the concatenation of the terms'
    scaled query vectors, each in its block.
    """

    def __init__(self, terms: dict[str, Loss], weights: dict[str, float], score_with: str | None = None,
                 spaces: dict[str, int] | None = None, balance: bool = False):
        super().__init__()
        self.terms = nn.ModuleDict(terms)
        self.weights = dict(weights)
        if score_with is not None and score_with not in self.terms:
            raise PolyalignError(f"score_with {score_with!r} is not a term of the weighted sum "
                                 f"({', '.join(self.terms)})")
        self.score_with = score_with
        self.spaces = dict(spaces or {})
        unknown = [k for k in self.spaces if k not in self.terms]
        if unknown:
            raise PolyalignError(f"spaces name terms the weighted sum does not have: {', '.join(unknown)}")
        self.n_spaces = max(self.spaces.values()) + 1 if self.spaces else 1
        if self.spaces and sorted(set(self.spaces.values())) != list(range(self.n_spaces)):
            raise PolyalignError(f"spaces must number the blocks 0..K-1, got {self.spaces}")
        if balance and len(self.spaces) < 2:
            raise PolyalignError("balance equalises the gradients of terms that train spaces of their own; "
                                 "it needs two or more terms in spaces (model.spaces: per_term)")
        self.balance = GradientBalance(list(self.spaces)) if balance else None

    def _blocks(self, name: str) -> list[int]:
        """The blocks term ``name`` sees: its own, or every block for a term without one."""
        if not self.spaces:
            return [0]
        return [self.spaces[name]] if name in self.spaces else list(range(self.n_spaces))

    def _slice(self, tensors: dict[str, torch.Tensor], block: int) -> dict[str, torch.Tensor]:
        """Block ``block`` of every embedding (all of it without spaces)."""
        if not self.spaces:
            return tensors
        out = {}
        for m, z in tensors.items():
            width = z.shape[-1]
            if width % self.n_spaces:
                raise PolyalignError(f"embeddings of {m!r} are {width} wide, which is not {self.n_spaces} equal "
                                     f"blocks (one per term of {' + '.join(self.spaces)})")
            size = width // self.n_spaces
            out[m] = z[..., block * size:(block + 1) * size]
        return out

    def scoring_terms(self) -> dict[str, nn.Module]:
        """The terms whose scores the weighted sum adds (``score_with`` alone when it is set)."""
        if self.score_with is not None:
            return {self.score_with: self.terms[self.score_with]}
        experts = {k: t for k, t in self.terms.items() if getattr(t, "scores_in_a_sum", True)}
        return experts or dict(self.terms)

    def _factor(self, name: str, term: nn.Module) -> torch.Tensor | float:
        if self.score_with is not None:
            return 1.0
        scale = term.logit_scale() if hasattr(term, "logit_scale") else 1.0
        return self.weights[name] * (scale.detach() if isinstance(scale, torch.Tensor) else scale)

    def forward(self, embeddings: dict[str, torch.Tensor],
                present: dict[str, torch.Tensor] | None = None) -> LossOutput:
        total = 0.0
        metrics: dict[str, Metric] = {}
        needs_grad = torch.is_grad_enabled() and any(z.requires_grad for z in embeddings.values())
        for name, term in self.terms.items():
            outs = []
            for block in self._blocks(name):
                sliced = self._slice(embeddings, block)
                if self.balance is not None and needs_grad and name in self.spaces:
                    sliced = {m: self.balance.attach(m, name, z) for m, z in sliced.items()}
                try:
                    raw = term(sliced, present)
                except Exception as exc:
                    detail = str(exc) if isinstance(exc, PolyalignError) else f"{type(exc).__name__}: {exc}"
                    raise PluginError(f"loss term {name!r} of the weighted sum {' + '.join(self.terms)} failed: "
                                      f"{detail}") from exc
                outs.append(check_loss_output(raw, name, needs_grad))
            out = outs[0] if len(outs) == 1 else LossOutput(torch.stack([o.loss for o in outs]).mean(),
                                                            outs[0].metrics)
            total = total + self.weights[name] * out.loss
            metrics[f"{name}/loss"] = out.loss.detach()
            metrics.update({f"{name}/{k}": v for k, v in out.metrics.items()})
        return LossOutput(total, metrics)

    def step_flops(self, n: int, d: int, m: int) -> float | None:
        counts = [t.step_flops(n, d, m) for t in self.terms.values() if hasattr(t, "step_flops")]
        counts = [c for c in counts if c is not None]
        return sum(counts) if counts else None

    def score_tuples(self, queries: dict[str, torch.Tensor],
                     candidates: dict[str, torch.Tensor]) -> torch.Tensor:
        total = None
        for name, term in self.scoring_terms().items():
            block = self._blocks(name)[0]
            part = self._factor(name, term) * score_candidates(term, self._slice(queries, block),
                                                               self._slice(candidates, block), name)
            total = part if total is None else total + part
        return total

    def _placed(self, name: str, vectors: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A term's query vectors (its block wide) in its block of a full-width vector, zeros elsewhere."""
        if not self.spaces:
            return vectors
        block, size = self._blocks(name)[0], vectors.shape[-1]
        out = vectors.new_zeros(vectors.shape[0], like.shape[-1])
        out[:, block * size:(block + 1) * size] = vectors
        return out

    def inner_product_query(self, queries: dict[str, torch.Tensor], target: str) -> torch.Tensor | None:
        terms = self.scoring_terms()
        like = next(iter(queries.values()))
        if len(terms) == 1:
            (name, term), = terms.items()
            vectors = term.inner_product_query(self._slice(queries, self._blocks(name)[0]), target)
            return None if vectors is None else self._placed(name, self._factor(name, term) * vectors, like)
        if not all(getattr(t, "exact_inner_product", False) for t in terms.values()):
            return None
        return sum(self._placed(k, self._factor(k, t) * t.inner_product_query(
            self._slice(queries, self._blocks(k)[0]), target), like) for k, t in terms.items())

    def inner_product_refusal(self) -> str:
        """Why no index can serve this sum's score (for the error that refuses one), or ''."""
        terms = self.scoring_terms()
        inexact = [k for k, t in terms.items() if not getattr(t, "exact_inner_product", False)]
        if len(terms) == 1 or not inexact:
            return ""
        return (f"the weighted sum scores with every term ({' + '.join(terms)}, a product of experts), and the "
                f"score of {', '.join(inexact)} is no exact inner product, so neither is the sum; score_with: "
                f"true on one loss node ranks with that term alone")


def can_rank_tuples(loss: nn.Module) -> bool:
    """Whether the loss's scoring rule ranks candidates made of several modalities (``tuple_candidates``)."""
    if isinstance(loss, WeightedLoss):
        return all(can_rank_tuples(t) for t in loss.scoring_terms().values())
    return bool(getattr(loss, "tuple_candidates", True))
