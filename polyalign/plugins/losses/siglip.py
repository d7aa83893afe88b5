"""Loss ``siglip``: pairwise sigmoid loss (Zhai et al., ICCV 2023) with one scale and bias per pair.

For a pair ``(m, n)``: ``−(1/N) Σ_ij logsigmoid(y_ij·(t·z[m]_i·z[n]_j + b))`` with ``y = 2I − 1``,
``t = exp(t')`` (``t'`` initialised at ``log(1/temperature)`` = log 10) and ``b`` initialised at
``bias`` (−10). Every pair of the graph (``full`` or ``star``, as for ``clip``) gets its own
``(t, b)``, created from the recipe's modalities. The total is the mean over pairs.
``chunk_size`` streams the rows (memory linear in N, exact gradients by recomputation).

Missing modalities: each pair term uses the rows where both are present; the mean is over the
terms with at least two rows.

Score: ``Σ_q Σ_c logsigmoid(t_qc·z_q·z_c + b_qc)`` over every (query, candidate) pair of
modalities, the log-probability that every query modality matches every candidate modality (one
query, one target: the same ranking as the cosine). A pair outside the trained graph uses the
mean ``(t, b)`` of the trained pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from polyalign.core.errors import PolyalignError
from polyalign.core.loss import (
    MAX_LOGIT_SCALE,
    MIN_LOGIT_SCALE,
    Loss,
    LossConfig,
    LossOutput,
    Metric,
    Temperature,
    full_present,
)
from polyalign.core.step_cost import contrast_flops

from .blockwise import Reductions, reduce_blockwise
from .pairwise import PairGraph, pair_graph, paired_rows
from .rows import zero_loss


class SiglipConfig(LossConfig):
    temperature: float = Field(0.1, ge=1 / MAX_LOGIT_SCALE, le=1 / MIN_LOGIT_SCALE,
                               description="initial τ = 1/t of every pair (t starts at 10), in [0.01, 1]")
    bias: float = Field(-10.0, description="initial bias b of every pair")
    pairs: PairGraph = Field("full", description="full = every pair; star = pairs with the anchor")
    anchor: str | None = Field(None, description="anchor modality of the star graph (default: first)")
    chunk_size: int | None = Field(None, ge=1, description="rows per block (memory linear in the batch); "
                                                           "default: the dense N x N logits")


def _sigmoid_terms(start: int, stop: int, zm: torch.Tensor, zn: torch.Tensor, scale: torch.Tensor,
                   bias: torch.Tensor) -> torch.Tensor:
    """``logsigmoid(y·(t·zm zᵀ + b))`` for rows ``start..stop`` (``y`` = +1 on the diagonal, else −1)."""
    logits = scale * zm[start:stop] @ zn.T + bias
    sign = -torch.ones_like(logits)
    r = torch.arange(stop - start, device=logits.device)
    sign[r, r + start] = 1.0
    return F.logsigmoid(sign * logits)


def siglip_pair(zm: torch.Tensor, zn: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                chunk_size: int | None = None) -> torch.Tensor:
    """The sigmoid loss of one pair of matched rows."""
    n = zm.shape[0]
    if chunk_size is None or chunk_size >= n:
        return -_sigmoid_terms(0, n, zm, zn, scale, bias).sum() / n
    row_sum = reduce_blockwise(_sigmoid_terms, n, chunk_size, (zm, zn, scale, bias), Reductions(row_sum=True))[2]
    return -row_sum.sum() / n


def _key(m: str, n: str) -> str:
    return f"{m}-{n}".replace(".", "_")


class SiglipLoss(Loss):
    """Mean over pairs of the pairwise sigmoid loss, with a learned (t, b) per pair."""

    def __init__(self, config: SiglipConfig, modalities: list[str] | None = None):
        super().__init__()
        if not modalities or len(modalities) < 2:
            raise PolyalignError("siglip creates one scale and bias per modality pair, so it needs the "
                                 "modality names: a recipe passes them; from Python call "
                                 "build('loss', 'siglip', modalities=[...])")
        self.config = config
        self.anchor = config.anchor or modalities[0]
        pairs = pair_graph(list(modalities), config.pairs, self.anchor)
        self.pair_keys = {frozenset(p): _key(*p) for p in pairs}
        self.scales = nn.ModuleDict({_key(*p): Temperature(config.temperature, config.learn_temperature)
                                     for p in pairs})
        self.biases = nn.ParameterDict({_key(*p): nn.Parameter(torch.tensor(config.bias)) for p in pairs})

    def _pair_key(self, m: str, n: str) -> str:
        key = self.pair_keys.get(frozenset((m, n)))
        if key is None:
            raise PolyalignError(f"siglip has no scale and bias for the pair ({m}, {n}); it was built for "
                                 f"the pairs {', '.join(sorted(self.pair_keys.values()))}")
        return key

    def forward(self, embeddings: dict[str, torch.Tensor],
                present: dict[str, torch.Tensor] | None = None) -> LossOutput:
        present = full_present(embeddings, present)
        terms: dict[str, torch.Tensor] = {}
        metrics: dict[str, Metric] = {}
        for m, n in pair_graph(list(embeddings), self.config.pairs, self.anchor):
            key = self._pair_key(m, n)
            rows = paired_rows(present, m, n)
            if rows.numel() >= 2:
                terms[key] = siglip_pair(embeddings[m][rows], embeddings[n][rows], self.scales[key].scale,
                                         self.biases[key], self.config.chunk_size)
        loss = torch.stack(list(terms.values())).mean() if terms else zero_loss(embeddings)
        metrics.update({f"loss_{k}": v.detach() for k, v in terms.items()})
        for key in self.scales:
            metrics[f"temperature_{key}"] = (1.0 / self.scales[key].scale).detach()
            metrics[f"bias_{key}"] = self.biases[key].detach()
        return LossOutput(loss, metrics)

    def step_flops(self, n: int, d: int, m: int) -> float:
        pairs = m * (m - 1) / 2 if self.config.pairs == "full" else m - 1
        return pairs * contrast_flops(n, n, d)

    def score_tuples(self, queries: dict[str, torch.Tensor], candidates: dict[str, torch.Tensor]) -> torch.Tensor:
        out = 0.0
        for q, zq in queries.items():
            for c, zc in candidates.items():
                key = self.pair_keys.get(frozenset((q, c)))
                if key is None:
                    scale = torch.stack([t.scale for t in self.scales.values()]).mean()
                    bias = torch.stack(list(self.biases.values())).mean()
                else:
                    scale, bias = self.scales[key].scale, self.biases[key]
                out = out + F.logsigmoid(scale * zq @ zc.T + bias)
        return out

    def inner_product_query(self, queries: dict[str, torch.Tensor], target: str) -> torch.Tensor | None:
        """One query modality: its embedding (``logsigmoid(t·z_q·z_t + b)`` rises with ``z_q·z_t``);
        a sum of several logsigmoids is no function of one inner product: None."""
        return next(iter(queries.values())) if len(queries) == 1 else None


def build_siglip(config: SiglipConfig, modalities: list[str] | None = None) -> SiglipLoss:
    return SiglipLoss(config, modalities)
