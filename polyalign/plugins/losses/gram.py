"""Loss ``gram``: contrastive learning with the Gram-matrix volume (Cicchetti et al., ICLR 2025).

``logit[i, j] = −Vol(z[a]_i, z[m]_j for every m ≠ a) / τ`` for an anchor modality ``a``;
loss ``½·(CE(logit) + CE(logitᵀ))`` with label smoothing. The defaults are the paper's recipe
(its reference code, ``ispamm/GRAM``): label smoothing 0.1 and the text modality as the anchor
(the modality named ``text``; without one, the first modality: set ``anchor`` to your text).
``Vol = sqrt(det G)`` of the Gram matrix of the vectors: 0 when they are linearly dependent
(aligned), 1 when orthonormal. It is computed in the Schur-complement form of
:mod:`.volume`: ``det(H_j)·‖a_i‖² − b_ijᵀ adj(H_j) b_ij``, O(N²·M·d), polynomial in the
embeddings (no matrix inverse), and the square root is clamped at machine epsilon, so the
gradient is finite even at an exactly aligned positive. Volume is sign-blind: ``x`` and ``−x``
count as aligned.

``negatives: per_modality`` takes every modality in turn as the anchor and averages the ``M``
losses. With one anchor, a negative differs from the positive in the anchor or in the whole
tuple of the others, never in one of them: at ``M = 6`` the easy modalities separate the tuples
and the others are never made to align, so retrieving one of them from the rest is poor (docs/
choosing-an-objective.md). With each modality as the anchor once, each is contrasted alone
against the others held fixed, the comparison that retrieval makes. The volume is symmetric in
its vectors, so the score does not change.

Missing modalities: each tuple uses its present modalities. A tuple takes part when its anchor
and at least one other modality are present; an absent non-anchor vector is replaced by a unit
vector orthogonal to everything else (its row and column of the Gram matrix become those of the
identity), which leaves the volume of the present vectors unchanged.

Score: ``−Vol`` of the query and candidate vectors together (text -> (video, audio): ``−Vol(t, v, a)``).
It is no function of one inner product with the candidate, so an index (``polyalign index``) cannot
serve this loss: ``inner_product_query`` is None and ``polyalign search`` refuses ``.faiss`` candidates.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from polyalign.plugin import ENTRY_FLOPS, Loss, LossConfig, LossOutput, PolyalignError, Temperature, full_present

from .blockwise import Reductions, reduce_blockwise
from .rows import zero_loss
from .volume import det_adj, safe_sqrt, tuple_gram, union_volume_sq, volume_sq, volume_sq_paired


class GramConfig(LossConfig):
    anchor: str | None = Field(None, description="anchor modality (default: 'text' if there is one, as in the "
                                                 "paper, else the first modality)")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="label smoothing of both cross-entropies "
                                                                "(0.1, the paper's)")
    negatives: Literal["anchor", "per_modality"] = Field(
        "anchor", description="anchor = the anchor against tuples of the others (the paper's); per_modality = "
                              "every modality in turn as the anchor, mean of the M losses (O(M²·N²·d))")
    chunk_size: int | None = Field(None, ge=1, description="anchor rows per block (memory linear in the "
                                                           "batch); default: the dense N x N logits")


def _volume_logits(present: torch.Tensor | None):
    def block(start: int, stop: int, anchor: torch.Tensor, others: torch.Tensor, det: torch.Tensor,
              adj: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return -scale * safe_sqrt(volume_sq(anchor[start:stop], others, det, adj, present))
    return block


def default_anchor(names: list[str]) -> str:
    """The paper's anchor, the text modality: ``text`` if it is a name, else the first name."""
    return "text" if "text" in names else names[0]


class GramLoss(Loss):
    """GRAM: symmetric InfoNCE on minus the Gram-matrix volume of an anchor and the other modalities

    Symmetric cross-entropy of negative volumes between anchor rows and the other modalities' tuples."""

    name = "gram"
    Options = GramConfig

    def __init__(self, config: GramConfig, modalities: list[str] | None = None):
        super().__init__()
        self.config = config
        self.anchor = config.anchor or (default_anchor(modalities) if modalities else None)
        self.temperature = Temperature(config.temperature, config.learn_temperature)

    def forward(self, embeddings: dict[str, torch.Tensor],
                present: dict[str, torch.Tensor] | None = None) -> LossOutput:
        names = list(embeddings)
        anchor = self.anchor or default_anchor(names)
        if anchor not in embeddings:
            raise PolyalignError(f"gram anchor {anchor!r} is not among the embedded modalities "
                                 f"({', '.join(names)}); set loss.anchor to one of them")
        present = full_present(embeddings, present)
        scale = self.temperature.scale
        metrics = {"temperature": (1.0 / scale).detach()}
        anchors = names if self.config.negatives == "per_modality" else [anchor]
        terms = []
        for a in anchors:
            term = self._anchor_loss(a, embeddings, present, scale)
            if term is None:
                continue
            loss, rows_ce, cols_ce, volume = term
            terms.append(loss)
            metrics.update({f"loss_{a}_to_tuple": rows_ce.detach(), f"loss_tuple_to_{a}": cols_ce.detach()})
            metrics[f"positive_volume_{a}" if len(anchors) > 1 else "positive_volume"] = volume
        if not terms:
            return LossOutput(zero_loss(embeddings), metrics)
        return LossOutput(torch.stack(terms).mean(), metrics)

    def _anchor_loss(self, anchor: str, embeddings: dict[str, torch.Tensor], present: dict[str, torch.Tensor],
                     scale: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        """``(loss, anchor->tuple CE, tuple->anchor CE, mean positive volume)`` with ``anchor``, or
        None when fewer than two tuples have it and another modality."""
        others = [m for m in embeddings if m != anchor]
        mask = torch.stack([present[m] for m in others], 1)  # (N, k)
        rows = (present[anchor] & mask.any(1)).nonzero(as_tuple=True)[0]
        if rows.numel() < 2:
            return None
        a = embeddings[anchor][rows]
        o = torch.stack([embeddings[m][rows] for m in others], 1)  # (N, k, d)
        pm = mask[rows]
        pm = None if bool(pm.all()) else pm
        det, adj = det_adj(tuple_gram(o, pm))
        pos = -scale * safe_sqrt(volume_sq_paired(a, o, det, adj, pm))
        block = _volume_logits(pm)
        n, eps = a.shape[0], self.config.label_smoothing
        chunk = self.config.chunk_size
        if chunk is None or chunk >= n:
            logits = block(0, n, a, o, det, adj, scale)
            labels = torch.arange(n, device=a.device)
            rows_ce = F.cross_entropy(logits, labels, label_smoothing=eps)
            cols_ce = F.cross_entropy(logits.T, labels, label_smoothing=eps)
        else:
            want = Reductions(row_lse=True, col_lse=True, row_sum=eps > 0, col_sum=eps > 0)
            row_lse, col_lse, row_sum, col_sum = reduce_blockwise(block, n, chunk, (a, o, det, adj, scale), want)
            rows_ce = (row_lse - (1 - eps) * pos).mean()
            cols_ce = (col_lse - (1 - eps) * pos).mean()
            if eps > 0:
                rows_ce = rows_ce - eps * row_sum.mean() / n
                cols_ce = cols_ce - eps * col_sum.mean() / n
        return 0.5 * (rows_ce + cols_ce), rows_ce, cols_ce, (-pos / scale).detach().mean()

    def step_flops(self, n: int, d: int, m: int) -> float:
        k = m - 1  # Vol² per logit: k dot products with the anchor, a k x k quadratic form
        anchors = m if self.config.negatives == "per_modality" else 1
        return anchors * float(n) * n * (3 * (2 * k * d + 2 * k * k) + ENTRY_FLOPS)

    def score_tuples(self, queries: dict[str, torch.Tensor], candidates: dict[str, torch.Tensor]) -> torch.Tensor:
        left = torch.stack(list(queries.values()), 1)  # (Q, k, d)
        right = torch.stack(list(candidates.values()), 1)  # (C, l, d)
        return -safe_sqrt(union_volume_sq(left, right))
