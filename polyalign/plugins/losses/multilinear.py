"""The multilinear inner product and the logsumexp over all its combinations, streamed in blocks.

For ``M`` modalities of ``N`` rows the logit tensor ``T[i1, ..., iM] = s · MIP(z1[i1], ..., zM[iM])``
has ``N^M`` entries and is the same whichever modality is the anchor. :func:`anchor_logsumexps`
returns, for every modality ``m`` and row ``i``, ``A[m, i] = logsumexp of T over every index but
the m-th fixed at i`` -- the log-denominators of Symile's all-combinations (``n_squared``)
objective for all ``M`` anchors at once -- without ever materialising ``T`` or the
``N^(M-1) x d`` candidate bank of the reference implementation.

How: the first ``M-2`` modalities are flattened into one "lead" index ``b`` (``N^(M-2)`` values);
a block of ``B`` lead rows gives ``P = z1[i1] ⊙ ... ⊙ z(M-2)[i(M-2)]`` (``B x d``) and
``T_blk = ((P ⊙ y) @ zᵀ)`` (``B x N x N``) with ``y, z`` the last two modalities. Each block feeds
every anchor's logsumexp (lead anchors through the per-lead-row logsumexp, ``y`` and ``z``
through running ``logaddexp``). Backward recomputes each block and forms the gradient of all
anchors' terms from one ``B x N x N`` weight tensor: three block matmuls.
"""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

BLOCK_ELEMENTS = 1 << 22
"""Default block size in logit entries (about 16 MB in float32)."""

KEEP_SHIFTS = 1 << 23
"""Forward keeps its per-row logsumexps for backward (``2·N^(M-1)`` numbers) up to this size."""


def elementwise_product(zs: list[torch.Tensor]) -> torch.Tensor:
    """``z_1 ⊙ ... ⊙ z_k`` of equally shaped tensors."""
    prod = zs[0]
    for z in zs[1:]:
        prod = prod * z
    return prod


def mip(*zs: torch.Tensor) -> torch.Tensor:
    """Row-wise multilinear inner product ``Σ_k Π_m z_m[:, k]`` of equally shaped ``(N, d)`` tensors."""
    return elementwise_product(list(zs)).sum(-1)


def default_chunk(n: int, d: int) -> int:
    """Lead rows per block so that one block holds about :data:`BLOCK_ELEMENTS` numbers."""
    return max(1, BLOCK_ELEMENTS // (n * (n + d)))


def _lead_indices(start: int, stop: int, n: int, n_lead: int, device: torch.device) -> list[torch.Tensor]:
    """Row index of each lead modality for flat lead rows ``start..stop`` (row-major)."""
    flat = torch.arange(start, stop, device=device)
    out = []
    for m in range(n_lead):
        out.append(torch.div(flat, n ** (n_lead - 1 - m), rounding_mode="floor") % n)
    return out


def _lead_product(lead: list[torch.Tensor], idx: list[torch.Tensor], like: torch.Tensor,
                  rows: int, skip: int | None = None) -> torch.Tensor:
    """``Π_m lead[m][idx[m]]`` (leaving out ``skip``), or ones when there is nothing to multiply."""
    prod = None
    for m, (z, i) in enumerate(zip(lead, idx)):
        if m != skip:
            prod = z[i] if prod is None else prod * z[i]
    return like.new_ones(rows, like.shape[1]) if prod is None else prod


class _Workspace:
    """Block-sized buffers reused across blocks: fresh multi-MB tensors per block cost page faults
    that take longer than the arithmetic on them."""

    def __init__(self, chunk: int, n: int, d: int, like: torch.Tensor, backward: bool):
        self.py = like.new_empty(chunk, n, d)
        self.t = like.new_empty(chunk, n, n)
        self.buf = like.new_empty(chunk, n, n)
        self.g = like.new_empty(chunk, n, n) if backward else None
        self.w = like.new_empty(chunk, n, d) if backward else None
        self.tmp = like.new_empty(chunk, n, d) if backward else None

    def logits(self, p: torch.Tensor, y: torch.Tensor, zt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P ⊙ y, T)`` of a block: ``(B, N, d)`` and ``T = (P ⊙ y) @ zt`` ``(B, N, N)``."""
        b, (n, d) = p.shape[0], y.shape
        py = torch.mul(p[:, None, :], y[None], out=self.py[:b])
        t = self.t[:b]
        torch.mm(py.view(b * n, d), zt, out=t.view(b * n, n))
        return py, t


def _shifted_exp(t: torch.Tensor, shift: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``exp(t - shift)`` written into ``out`` (one pass, no new allocation)."""
    torch.sub(t, shift, out=out)
    return out.exp_()


class _AnchorLogsumexps(torch.autograd.Function):
    @staticmethod
    def forward(ctx, chunk: int, scale: torch.Tensor, *zs: torch.Tensor) -> torch.Tensor:
        lead, y, z = list(zs[:-2]), zs[-2], zs[-1]
        n, d = y.shape
        n_lead = len(lead)
        rows = n ** n_lead
        chunk = min(chunk, rows)
        zt = (scale * z).T.contiguous()  # T = s·MIP comes straight out of the matmul
        r = y.new_empty(rows)  # logsumexp over (j, k) per lead row
        a_y = y.new_full((n,), -math.inf)
        a_z = y.new_full((n,), -math.inf)
        keep = 2 * rows * n <= KEEP_SHIFTS
        u_all = y.new_empty(rows, n) if keep else y.new_empty(0)
        v_all = y.new_empty(rows, n) if keep else y.new_empty(0)
        ws = _Workspace(chunk, n, d, y, backward=False)
        for start in range(0, rows, chunk):
            stop = min(start + chunk, rows)
            idx = _lead_indices(start, stop, n, n_lead, y.device)
            _, t = ws.logits(_lead_product(lead, idx, y, stop - start), y, zt)
            buf = ws.buf[:stop - start]
            # exact logsumexps along k and along j, each shifted by its own maximum
            m = t.amax(2, keepdim=True)
            u = _shifted_exp(t, m, buf).sum(2).log_() + m[..., 0]  # (B, N): LSE over k
            m = t.amax(1, keepdim=True)
            v = _shifted_exp(t, m, buf).sum(1).log_() + m[:, 0]  # (B, N): LSE over j
            if keep:
                u_all[start:stop], v_all[start:stop] = u, v
            r[start:stop] = u.logsumexp(1)
            a_y = torch.logaddexp(a_y, u.logsumexp(0))
            a_z = torch.logaddexp(a_z, v.logsumexp(0))
        grid = r.view((n,) * n_lead) if n_lead else r
        a_lead = [grid.logsumexp([k for k in range(n_lead) if k != m]) if n_lead > 1 else grid
                  for m in range(n_lead)]
        out = torch.stack([*a_lead, a_y, a_z])
        ctx.chunk = chunk
        ctx.save_for_backward(scale, r, out, u_all, v_all, *zs)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        scale, r, out, u_all, v_all, *zs = ctx.saved_tensors
        lead, y, z = zs[:-2], zs[-2], zs[-1]
        n, d = y.shape
        n_lead = len(lead)
        rows, chunk = n ** n_lead, ctx.chunk
        g_lead, g_y, g_z = grad[:n_lead], grad[-2], grad[-1]
        a_lead, a_y, a_z = out[:n_lead], out[-2], out[-1]
        zt = (scale * z).T.contiguous()
        grads = [torch.zeros_like(x) for x in zs]
        grad_scale = torch.zeros_like(scale)
        ws = _Workspace(chunk, n, d, y, backward=True)
        for start in range(0, rows, chunk):
            stop = min(start + chunk, rows)
            b = stop - start
            idx = _lead_indices(start, stop, n, n_lead, y.device)
            p = _lead_product(lead, idx, y, b)
            py, t = ws.logits(p, y, zt)
            # dΣ_m g_m·A_m / dT = Σ_m g_m[i_m]·exp(T − A_m[i_m]). Shift by m_bj (max or LSE of T
            # over k) and m_bk (over j): both are >= the entries they shift and <= every A they
            # are paired with, so each term is a factor <= 1 times exp(T − m_bj) or exp(T − m_bk):
            # nothing overflows, and what underflows is below 1e-38 of a softmax summing to 1.
            rb = r[start:stop]
            if u_all.numel():
                m_bj, m_bk = u_all[start:stop], v_all[start:stop]
            else:
                m_bj, m_bk = t.amax(2), t.amax(1)
            coef_j = g_y[None, :] * torch.exp(m_bj - a_y[None, :])
            if n_lead:
                coef_lead = sum(g_lead[m][idx[m]] * torch.exp(rb - a_lead[m][idx[m]]) for m in range(n_lead))
                coef_j = coef_j + coef_lead[:, None] * torch.exp(m_bj - rb[:, None])
            coef_k = g_z[None, :] * torch.exp(m_bk - a_z[None, :])
            g = _shifted_exp(t, m_bj[:, :, None], ws.g[:b]).mul_(coef_j[:, :, None])
            g += _shifted_exp(t, m_bk[:, None, :], ws.buf[:b]).mul_(coef_k[:, None, :])  # g = dL/dT
            g2 = g.view(b * n, n)
            w = ws.w[:b]
            torch.mm(g2, z, out=w.view(b * n, d))  # w[b, j] = Σ_k g[b, j, k] z_k
            grad_scale += torch.dot(py.reshape(-1), w.reshape(-1))  # Σ dL/dT · MIP
            grads[-1].addmm_(g2.T, py.view(b * n, d))
            tmp = ws.tmp[:b]
            grads[-2].add_(torch.mul(w, p[:, None, :], out=tmp).sum(0))
            if n_lead:
                grad_p = torch.mul(w, y[None], out=tmp).sum(1)
                for m in range(n_lead):
                    grads[m].index_add_(0, idx[m], grad_p * _lead_product(lead, idx, y, b, skip=m))
        for g in grads:  # dT/dz carries the factor s; applied once (a tensor: no host read-back)
            g.mul_(scale)
        return (None, grad_scale, *grads)


def anchor_logsumexps(zs: list[torch.Tensor], scale: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """``A[m, i] = logsumexp over all (i_1..i_M) with i_m = i of s·MIP(z_1[i_1], ..., z_M[i_M])``.

    ``zs``: ``M >= 2`` tensors of shape ``(N, d)``; ``scale``: the scalar ``s``; ``chunk``: lead
    rows per block (default: about 4M logits a block). Returns ``(M, N)``, differentiable in
    ``zs`` and ``scale``; memory ``O(chunk · N² + N^(M-2))`` plus, when it is at most
    :data:`KEEP_SHIFTS`, ``2·N^(M-1)`` per-row logsumexps kept for backward.
    """
    if len(zs) < 2:
        raise ValueError(f"anchor_logsumexps needs at least 2 modalities, got {len(zs)}")
    n, d = zs[0].shape
    chunk = chunk or default_chunk(n, d)
    return _AnchorLogsumexps.apply(chunk, scale.to(zs[0].dtype), *zs)
