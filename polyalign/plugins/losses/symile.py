"""Loss ``symile``: contrastive learning with the multilinear inner product (Saporta et al., 2024).

``MIP(x¹, ..., x^M) = Σ_k Π_m x^m_k``; for anchor modality ``m`` the positive of row ``i`` is the
tuple ``(i, ..., i)``; the loss is the mean over the ``M`` anchors of the cross-entropy.

- ``negatives: auto`` (default): ``n_squared`` while its ``N^M`` logits of a batch of ``N`` stay
  within :data:`AFFORDABLE_LOGITS` (M = 3 up to N = 256, M = 4 up to N = 64, M = 6 up to N = 16),
  ``per_modality`` beyond, so that no default grows like ``N^M``. ``N`` is the rows one loss call
  contrasts, ``train.batch_size`` (times ``accumulate`` under ``negatives: window``), a context
  argument of the class: every batch of a run, the last smaller one included, takes the same branch.
  Built without it, the first batch's rows decide.
- ``negatives: n_squared``: every combination of the other modalities' rows is a
  candidate (``N^(M-1)`` per anchor row). Computed exactly, but blockwise: all ``M`` anchors
  share one logit tensor, which is streamed block by block and recomputed in backward (see
  :mod:`.multilinear`); memory stays ``O(block + N^(M-2))``.
- ``negatives: per_modality``: for each modality ``m``, symmetric InfoNCE of ``z_m`` against the
  direction of ``P_m = ⊙_{k≠m} z_k``, the elementwise product of the other modalities of the same
  tuple: ``logit[i, j] = s · z_m[i] · P_m[j] / ‖P_m[j]‖`` -- the MIP of tuple ``j`` with its
  modality ``m`` replaced by row ``i``, divided by the norm of the product it is contrasted
  with -- both directions, mean over ``m``. Each negative differs from the positive in one
  modality only, which is the comparison retrieving a held-out modality makes. The division
  changes no ranking of one modality's candidates for a given query (it is one number per
  query), but keeps the logits at the scale of cosines: a product of ``M - 1`` unit vectors
  shrinks like ``d^-(M-2)/2``, and without it the logits of ``M = 6`` tuples never leave zero
  under ``1/τ ≤ 100`` (docs/choosing-an-objective.md). ``O(M·N²·d)``, like CLIP over ``M``
  pairs. With ``M = 2`` it is exactly CLIP with the dot product.
- ``negatives: n``: per anchor, each other modality's rows are shuffled by their own random
  permutation and multiplied into one ``(N, d)`` bank; logits ``N x N`` with the positive MIP on
  the diagonal. With ``M = 2`` the other modality is left unshuffled, so the loss is exactly
  CLIP with the dot product (the reference package shuffles here too, which can place the
  anchor's own positive among its negatives).
- ``scale: dim`` multiplies the MIP by ``d^((M-1)/2)`` (a random MIP of unit vectors shrinks like
  ``d^-(M-1)/2``) and divides the initial ``1/τ`` by the same factor, so training starts from the
  same logits as ``scale: none``; what changes is the ceiling: ``1/τ ≤ 100`` now allows logits
  ``d^((M-1)/2)`` times larger (the floor ``1/τ ≥ 1`` stays on the scaled logits, so it is lowered
  by the same factor). It needs ``embed_dim`` and ``modalities`` (a recipe passes them).

Missing modalities: the MIP is defined on whole tuples, so the loss uses the rows where every
modality is present (fewer than two such rows give a zero loss). To learn from incomplete
tuples too, use ``missing: {strategy: learned}``: the model then fills each absent modality
with a learned embedding and the loss sees complete tuples (the Symile paper's recipe).

Score: ``(⊙_{q∈Q} z_q) · (⊙_{c∈C} z_c)``, the MIP of the query and candidate modalities together
(one candidate modality: ``(⊙_q z_q) · z_t``) -- one elementwise product per side, then one
matmul. Trained with ``per_modality`` negatives, a side made of several modalities enters as its
direction (``P / ‖P‖``), as it did in training: the same ranking of one modality's candidates.
From a subset of the modalities it is the MIP of that subset only: a quantity the loss never
trained unless the model fills the absent ones (``missing: {strategy: learned}``), see docs/losses.md.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from polyalign.plugin import (
    ENTRY_FLOPS,
    MIN_LOGIT_SCALE,
    Loss,
    LossConfig,
    LossOutput,
    MemoryNeed,
    PolyalignError,
    Temperature,
    contrast_flops,
    full_present,
)

from .multilinear import anchor_logsumexps, elementwise_product, mip
from .pairwise import symmetric_info_nce
from .rows import all_present, complete_rows, zero_loss

AFFORDABLE_LOGITS = 1 << 24
"""``negatives: auto`` keeps ``n_squared`` while a batch has at most this many logits ``N^M``
(16.8M: under a second a step on one CPU core at d = 64)."""

Negatives = Literal["auto", "n", "n_squared", "per_modality"]


class SymileConfig(LossConfig):
    negatives: Negatives = Field(
        "auto", description="auto = n_squared while N^M <= 2^24, else per_modality; n_squared = every "
                            "combination of the other modalities' rows; per_modality = each modality "
                            "against the product of the others of its tuple (O(M·N²·d)); n = one "
                            "shuffled bank of N negatives per anchor")
    scale: Literal["none", "dim"] = Field(
        "none", description="dim = multiply the MIP by d^((M-1)/2) and lower the initial 1/τ to match")
    chunk_size: int | None = Field(None, ge=1, description="n_squared: rows of the first M-2 modalities' "
                                                           "combinations per block (default: ~4M logits a block); "
                                                           "per_modality: rows per block (default: dense)")

    @model_validator(mode="after")
    def _dim_scale_needs_the_raw_product(self) -> SymileConfig:
        if self.scale == "dim" and self.negatives not in ("n", "n_squared"):
            raise ValueError(f"scale: dim rescales the raw MIP that negatives n and n_squared contrast; "
                             + ("negatives auto may resolve to per_modality (a batch beyond its N^M budget), which "
                                if self.negatives == "auto" else f"negatives {self.negatives} ")
                             + "contrasts the direction of the product of the other modalities, whose scale does "
                             "not shrink with d: set negatives: n or n_squared, "
                             "or leave scale: none")
        return self

    def memory_need(self, context: dict) -> MemoryNeed | None:
        """n_squared keeps one log-sum-exp per combination of the first M-2 modalities' rows: N^(M-2)
        numbers for a batch of N, which outgrows any machine as modalities are added."""
        m, n = len(context.get("modalities", [])), context.get("batch_size")
        if self.negatives != "n_squared" or m <= 3 or not n:
            return None
        return MemoryNeed(4.0 * float(n) ** (m - 2), f"negatives: n_squared over {m} modalities with a batch of "
                          f"{n} keeps {n}^{m - 2} = {float(n) ** (m - 2):.3g} log-sum-exps of 4 bytes",
                          "use negatives: n, or a smaller train.batch_size")


def resolve_negatives(negatives: Negatives, n_modalities: int, batch_size: int) -> str:
    """The scheme ``negatives`` stands for with ``M`` modalities and batches of ``batch_size``."""
    if negatives != "auto":
        return negatives
    return "n_squared" if float(batch_size) ** n_modalities <= AFFORDABLE_LOGITS else "per_modality"


def product_direction(zs: list[torch.Tensor]) -> torch.Tensor:
    """``⊙ z_k`` of several modalities as a unit vector per row (one modality: as it is)."""
    return zs[0] if len(zs) == 1 else F.normalize(elementwise_product(zs), dim=-1)


def products_of_the_others(zs: list[torch.Tensor]) -> list[torch.Tensor]:
    """``[⊙_{k≠m} z_k for each m]`` from prefix and suffix products (``2M`` products, no division)."""
    prefix, suffix = [None] * len(zs), [None] * len(zs)
    for k in range(1, len(zs)):
        prefix[k] = zs[0] if k == 1 else prefix[k - 1] * zs[k - 1]
    for k in range(len(zs) - 2, -1, -1):
        suffix[k] = zs[-1] if k == len(zs) - 2 else suffix[k + 1] * zs[k + 1]
    return [p if s is None else s if p is None else p * s for p, s in zip(prefix, suffix)]


def mip_multiplier(embed_dim: int, n_modalities: int) -> float:
    """``d^((M-1)/2)``: the typical inverse size of the MIP of M random unit vectors in d dimensions."""
    return float(embed_dim) ** ((n_modalities - 1) / 2)


class SymileLoss(Loss):
    """Symile: InfoNCE on the multilinear inner product of all M modalities (negatives: auto, n_squared,
    per_modality, n)

    Mean over anchor modalities of the cross-entropy of multilinear-inner-product logits."""

    name = "symile"
    Options = SymileConfig

    exact_inner_product = True

    def __init__(self, config: SymileConfig, modalities: list[str] | None = None, embed_dim: int | None = None,
                 batch_size: int | None = None):
        super().__init__()
        self.config = config
        # (M, N) that negatives: auto resolves with: the recipe's, else the first batch's
        self.shape = (len(modalities), batch_size) if modalities and batch_size else None
        init = 1.0
        if config.scale == "dim":
            if not modalities or not embed_dim:
                raise PolyalignError("symile scale: dim needs the modalities and embed_dim; a recipe passes "
                                     "them, from Python call build('loss', 'symile', scale='dim', "
                                     "modalities=[...], embed_dim=...)")
            init = mip_multiplier(embed_dim, len(modalities))
        self.multiplier = init
        self.temperature = Temperature(config.temperature * init, config.learn_temperature,
                                       min_scale=MIN_LOGIT_SCALE / init)  # the floor on the scaled logits

    def _multiplier(self, zs: list[torch.Tensor]) -> float:
        return mip_multiplier(zs[0].shape[1], len(zs)) if self.config.scale == "dim" else 1.0

    def _anchor_n(self, zs: list[torch.Tensor], k: int, pos: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of anchor ``k`` against one shuffled bank of negatives."""
        others = [z for j, z in enumerate(zs) if j != k]
        n = zs[k].shape[0]
        if len(others) == 1:  # M = 2: the plain dot-product logits, positive only on the diagonal
            bank = others[0]
        else:
            bank = others[0][torch.randperm(n, device=pos.device)]
            for z in others[1:]:
                bank = bank * z[torch.randperm(n, device=pos.device)]
        logits = torch.diagonal_scatter(scale * zs[k] @ bank.T, pos)
        return (logits.logsumexp(1) - pos).mean()

    def forward(self, embeddings: dict[str, torch.Tensor],
                present: dict[str, torch.Tensor] | None = None) -> LossOutput:
        names = list(embeddings)
        present = full_present(embeddings, present)
        if all_present(present, names):
            zs = [embeddings[m] for m in names]
        else:
            rows = complete_rows(present, names)
            zs = [embeddings[m][rows] for m in names]
        scale = self.temperature.scale
        metrics = {"temperature": (1.0 / scale).detach()}
        if zs[0].shape[0] < 2:
            return LossOutput(zero_loss(embeddings), metrics)
        scale = scale * self._multiplier(zs)
        if self.shape is None:
            self.shape = (len(zs), zs[0].shape[0])
        negatives = self.negatives
        if negatives == "per_modality":
            rests = products_of_the_others(zs)
            if len(zs) > 2:
                rests = [F.normalize(rest, dim=-1) for rest in rests]
            per_anchor = torch.stack([symmetric_info_nce(z, rest, scale, self.config.chunk_size)
                                      for z, rest in zip(zs, rests)])
        elif negatives == "n_squared":
            pos = scale * mip(*zs)
            per_anchor = anchor_logsumexps(zs, scale, self.config.chunk_size).mean(1) - pos.mean()
        else:
            pos = scale * mip(*zs)
            per_anchor = torch.stack([self._anchor_n(zs, k, pos, scale) for k in range(len(zs))])
        metrics.update({f"loss_{m}": v for m, v in zip(names, per_anchor.detach())})
        return LossOutput(per_anchor.mean(), metrics)

    def logit_scale(self) -> torch.Tensor:
        """``1/τ`` times the MIP's multiplier (``scale: dim``): what turns the score into the logits."""
        return self.temperature.scale * self.multiplier

    def step_flops(self, n: int, d: int, m: int) -> float:
        """n_squared: ``N^M`` logits, each a d-long product in 5 matmuls (forward, recomputed forward,
        3 in backward) and 2 log-sum-exps; per_modality and n: ``M`` blocks of ``N x N``."""
        if resolve_negatives(self.config.negatives, m, n) == "n_squared":
            return float(n) ** m * (2.0 * 5 * d + 2 * ENTRY_FLOPS)
        return m * contrast_flops(n, n, d)

    @property
    def negatives(self) -> str:
        """The negative scheme this loss trains (``auto`` resolved; before any batch, as n_squared)."""
        if self.shape is None:
            return "n_squared" if self.config.negatives == "auto" else self.config.negatives
        return resolve_negatives(self.config.negatives, *self.shape)

    def _side(self, zs: list[torch.Tensor]) -> torch.Tensor:
        """One side of the score: the product of its modalities (its direction, after per_modality)."""
        return product_direction(zs) if self.negatives == "per_modality" else elementwise_product(zs)

    def score_tuples(self, queries: dict[str, torch.Tensor], candidates: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._side(list(queries.values())) @ self._side(list(candidates.values())).T

    def inner_product_query(self, queries: dict[str, torch.Tensor], target: str) -> torch.Tensor:
        """``⊙_{q∈Q} z_q``: the elementwise product of the query embeddings (its direction after per_modality)."""
        return self._side(list(queries.values()))
