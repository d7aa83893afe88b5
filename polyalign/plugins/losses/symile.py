"""Loss ``symile``: contrastive learning with the multilinear inner product (Saporta et al., 2024).

``MIP(x¹, ..., x^M) = Σ_k Π_m x^m_k``; for anchor modality ``m`` the positive of row ``i`` is the
tuple ``(i, ..., i)``; the loss is the mean over the ``M`` anchors of the cross-entropy.

- ``negatives: n_squared`` (default): every combination of the other modalities' rows is a
  candidate (``N^(M-1)`` per anchor row). Computed exactly, but blockwise: all ``M`` anchors
  share one logit tensor, which is streamed block by block and recomputed in backward (see
  :mod:`.multilinear`); memory stays ``O(block + N^(M-2))``.
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
matmul. From a subset of the modalities it is the MIP of that subset only: a quantity the loss
never trained unless the model fills the absent ones (``missing: {strategy: learned}``), see
docs/losses.md.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, ValidationInfo, model_validator

from polyalign.core.errors import PolyalignError
from polyalign.core.loss import MIN_LOGIT_SCALE, Loss, LossConfig, LossOutput, Temperature, full_present
from polyalign.core.memory import memory_problem

from .multilinear import anchor_logsumexps, elementwise_product, mip
from .rows import all_present, complete_rows, zero_loss


class SymileConfig(LossConfig):
    negatives: Literal["n", "n_squared"] = Field(
        "n_squared", description="n_squared = every combination of the other modalities' rows; "
                                 "n = one shuffled bank of N negatives per anchor")
    scale: Literal["none", "dim"] = Field(
        "none", description="dim = multiply the MIP by d^((M-1)/2) and lower the initial 1/τ to match")
    chunk_size: int | None = Field(None, ge=1, description="n_squared: rows of the first M-2 modalities' "
                                                           "combinations per block (default: ~4M logits a block)")

    @model_validator(mode="after")
    def _fits_in_memory(self, info: ValidationInfo) -> SymileConfig:
        """n_squared keeps one log-sum-exp per combination of the first M-2 modalities' rows: N^(M-2)
        numbers for a batch of N, which outgrows any machine as modalities are added."""
        context = info.context or {}
        m, n = len(context.get("modalities", [])), context.get("batch_size")
        if self.negatives == "n_squared" and m > 3 and n:
            problem = memory_problem(4.0 * float(n) ** (m - 2), f"negatives: n_squared over {m} modalities "
                                     f"with a batch of {n} keeps {n}^{m - 2} = {float(n) ** (m - 2):.3g} "
                                     f"log-sum-exps of 4 bytes")
            if problem:
                raise ValueError(f"{problem}; use negatives: n, or a smaller train.batch_size")
        return self


def mip_multiplier(embed_dim: int, n_modalities: int) -> float:
    """``d^((M-1)/2)``: the typical inverse size of the MIP of M random unit vectors in d dimensions."""
    return float(embed_dim) ** ((n_modalities - 1) / 2)


class SymileLoss(Loss):
    """Mean over anchor modalities of the cross-entropy of multilinear-inner-product logits."""

    def __init__(self, config: SymileConfig, modalities: list[str] | None = None, embed_dim: int | None = None):
        super().__init__()
        self.config = config
        init = 1.0
        if config.scale == "dim":
            if not modalities or not embed_dim:
                raise PolyalignError("symile scale: dim needs the modalities and embed_dim; a recipe passes "
                                     "them, from Python call build('loss', 'symile', scale='dim', "
                                     "modalities=[...], embed_dim=...)")
            init = mip_multiplier(embed_dim, len(modalities))
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
        pos = scale * mip(*zs)
        if self.config.negatives == "n_squared":
            per_anchor = anchor_logsumexps(zs, scale, self.config.chunk_size).mean(1) - pos.mean()
        else:
            per_anchor = torch.stack([self._anchor_n(zs, k, pos, scale) for k in range(len(zs))])
        metrics.update({f"loss_{m}": v for m, v in zip(names, per_anchor.detach())})
        return LossOutput(per_anchor.mean(), metrics)

    def score_tuples(self, queries: dict[str, torch.Tensor], candidates: dict[str, torch.Tensor]) -> torch.Tensor:
        return elementwise_product(list(queries.values())) @ elementwise_product(list(candidates.values())).T

    def inner_product_query(self, queries: dict[str, torch.Tensor], target: str) -> torch.Tensor:
        """``⊙_{q∈Q} z_q``: the elementwise product of the query embeddings."""
        return elementwise_product(list(queries.values()))


def build_symile(config: SymileConfig, modalities: list[str] | None = None,
                 embed_dim: int | None = None) -> SymileLoss:
    return SymileLoss(config, modalities, embed_dim)
