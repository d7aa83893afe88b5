"""Volumes of the parallelotope spanned by k vectors, in the Schur-complement form GRAM uses.

``Vol² = det G`` with ``G`` the Gram matrix of ``(a, o_1, ..., o_{k-1})``. Splitting off ``a``:
``det G = det(H)·‖a‖² − bᵀ adj(H) b`` with ``H`` the Gram matrix of the ``o``'s and ``b = (o_m·a)``.
That is the Schur form ``det(H)·(‖a‖² − bᵀH⁻¹b)`` multiplied through by ``det H``, so no inverse is
taken: ``det H`` and ``adj H`` come from the Faddeev-LeVerrier recursion, which divides only by
integers. Every quantity is then a polynomial in the inputs, with exact, finite gradients even
when ``H`` is singular (an aligned positive tuple). ``H`` belongs to one tuple, so for an
``A x N`` table of volumes it is computed N times, not A·N times.
"""

from __future__ import annotations

import torch


def det_adj(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(det H, adj H)`` of a batch of square matrices ``(..., n, n)`` (Faddeev-LeVerrier)."""
    n = h.shape[-1]
    eye = torch.eye(n, dtype=h.dtype, device=h.device).expand_as(h)
    m = torch.zeros_like(h)
    coef = torch.ones(h.shape[:-2], dtype=h.dtype, device=h.device)  # c_n = 1
    for k in range(1, n + 1):
        m = h @ m + coef[..., None, None] * eye
        coef = -(h @ m).diagonal(dim1=-2, dim2=-1).sum(-1) / k
    sign = -1.0 if n % 2 else 1.0
    return sign * coef, -sign * m


def tuple_gram(others: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
    """Gram matrices ``(N, k, k)`` of ``others`` ``(N, k, d)``; an absent vector acts as a unit
    vector orthogonal to the rest (its row and column of ``H`` become the identity's)."""
    h = others @ others.transpose(1, 2)
    if present is None:
        return h
    keep = present.to(h.dtype)
    eye = torch.eye(h.shape[-1], dtype=h.dtype, device=h.device)
    return h * keep[:, :, None] * keep[:, None, :] + eye * (1 - keep)[:, None, :]


def volume_sq(anchor: torch.Tensor, others: torch.Tensor, det: torch.Tensor, adj: torch.Tensor,
              present: torch.Tensor | None = None) -> torch.Tensor:
    """``(A, N)`` table of ``Vol²(anchor_i, others_j)``; ``det``/``adj`` of :func:`tuple_gram`."""
    b = torch.einsum("ad,nkd->ank", anchor, others)
    if present is not None:
        b = b * present.to(b.dtype)[None]
    quad = torch.einsum("ank,nkl,anl->an", b, adj, b)
    return det[None, :] * (anchor * anchor).sum(-1)[:, None] - quad


def volume_sq_paired(anchor: torch.Tensor, others: torch.Tensor, det: torch.Tensor, adj: torch.Tensor,
                     present: torch.Tensor | None = None) -> torch.Tensor:
    """``(N,)`` of ``Vol²(anchor_i, others_i)``: the diagonal of :func:`volume_sq`."""
    b = torch.einsum("nd,nkd->nk", anchor, others)
    if present is not None:
        b = b * present.to(b.dtype)
    quad = torch.einsum("nk,nkl,nl->n", b, adj, b)
    return det * (anchor * anchor).sum(-1) - quad


def union_volume_sq(left: torch.Tensor, right: torch.Tensor, budget: int = 1 << 22) -> torch.Tensor:
    """``(A, B)`` table of the squared volume spanned by tuple ``a`` of ``left`` ``(A, k, d)``
    together with tuple ``b`` of ``right`` ``(B, l, d)``.

    A side of single vectors goes through the Schur form of :func:`volume_sq`; otherwise each
    ``(k + l)``-square Gram matrix is built and its determinant taken, ``budget`` numbers at a time.
    """
    if right.shape[1] == 1:
        det, adj = det_adj(tuple_gram(left))
        return volume_sq(right[:, 0], left, det, adj).T
    if left.shape[1] == 1:
        det, adj = det_adj(tuple_gram(right))
        return volume_sq(left[:, 0], right, det, adj)
    h_left, h_right = tuple_gram(left), tuple_gram(right)
    n_b, n = right.shape[0], left.shape[1] + right.shape[1]
    rows = max(1, budget // (n_b * n * n))
    out = []
    for start in range(0, left.shape[0], rows):
        cross = torch.einsum("akd,bld->abkl", left[start:start + rows], right)
        a = cross.shape[0]
        top = torch.cat([h_left[start:start + a, None].expand(-1, n_b, -1, -1), cross], -1)
        bottom = torch.cat([cross.transpose(-1, -2), h_right[None].expand(a, -1, -1, -1)], -1)
        out.append(det_adj(torch.cat([top, bottom], -2))[0])
    return torch.cat(out)


def safe_sqrt(v2: torch.Tensor) -> torch.Tensor:
    """``sqrt(max(v2, eps))``: a volume whose gradient stays finite at zero volume."""
    return v2.clamp_min(torch.finfo(v2.dtype).eps).sqrt()
