"""Row and column reductions of a logit matrix computed block by block, recomputed in backward.

A loss that needs the logsumexp (or the sum) of every row and column of an ``R x C`` logit
matrix calls :func:`reduce_blockwise` with a function producing one block of rows. Forward keeps
no autograd graph: it holds one block at a time and the results. Backward recomputes each block
with autograd enabled and pushes the exact gradient through it. Peak memory is therefore
``O(chunk · C)`` instead of ``O(R · C)``, at the price of one extra forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.autograd.function import once_differentiable

BlockFn = Callable[..., torch.Tensor]
"""``block(start, stop, *inputs) -> (stop - start, C)`` logits; masked entries are ``-inf``."""


@dataclass(frozen=True)
class Reductions:
    """Which reductions of the logit matrix a loss needs."""

    row_lse: bool = False
    col_lse: bool = False
    row_sum: bool = False
    col_sum: bool = False


def _safe(lse: torch.Tensor) -> torch.Tensor:
    """``lse`` with fully masked (``-inf``) entries set to 0, so ``exp(-inf - lse)`` is 0, not NaN."""
    return torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))


class _Blockwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, block: BlockFn, n_rows: int, chunk: int, want: Reductions, *inputs: torch.Tensor):
        row_lse, row_sum = [], []
        col_lse = col_sum = None
        with torch.no_grad():
            for start in range(0, n_rows, chunk):
                stop = min(start + chunk, n_rows)
                logits = block(start, stop, *inputs)
                if want.row_lse:
                    row_lse.append(logits.logsumexp(1))
                if want.row_sum:
                    row_sum.append(logits.sum(1))
                if want.col_lse:
                    part = logits.logsumexp(0)
                    col_lse = part if col_lse is None else torch.logaddexp(col_lse, part)
                if want.col_sum:
                    part = logits.sum(0)
                    col_sum = part if col_sum is None else col_sum + part
        ref = inputs[0]
        empty = ref.new_empty(0)
        outs = (torch.cat(row_lse) if row_lse else empty, empty if col_lse is None else col_lse,
                torch.cat(row_sum) if row_sum else empty, empty if col_sum is None else col_sum)
        ctx.block, ctx.n_rows, ctx.chunk, ctx.want = block, n_rows, chunk, want
        ctx.save_for_backward(*inputs, outs[0], outs[1])
        return outs

    @staticmethod
    @once_differentiable
    def backward(ctx, g_row_lse, g_col_lse, g_row_sum, g_col_sum):
        *inputs, row_lse, col_lse = ctx.saved_tensors
        want: Reductions = ctx.want
        needs = ctx.needs_input_grad[4:]
        grads = [torch.zeros_like(x) if need else None for x, need in zip(inputs, needs)]
        if not any(needs):
            return (None, None, None, None, *grads)
        row_lse, col_lse = _safe(row_lse), _safe(col_lse)
        for start in range(0, ctx.n_rows, ctx.chunk):
            stop = min(start + ctx.chunk, ctx.n_rows)
            with torch.enable_grad():
                leaves = [x.detach().requires_grad_(need) for x, need in zip(inputs, needs)]
                logits = ctx.block(start, stop, *leaves)
            with torch.no_grad():
                g = torch.zeros_like(logits)
                if want.row_lse:
                    g += g_row_lse[start:stop, None] * torch.exp(logits - row_lse[start:stop, None])
                if want.col_lse:
                    g += g_col_lse[None, :] * torch.exp(logits - col_lse[None, :])
                if want.row_sum:
                    g += g_row_sum[start:stop, None]
                if want.col_sum:
                    g += g_col_sum[None, :]
            wrt = [leaf for leaf, need in zip(leaves, needs) if need]
            parts = iter(torch.autograd.grad(logits, wrt, g, allow_unused=True))
            for k, need in enumerate(needs):
                if need:
                    part = next(parts)
                    if part is not None:
                        grads[k] += part
        return (None, None, None, None, *grads)


def reduce_blockwise(block: BlockFn, n_rows: int, chunk: int, inputs: tuple[torch.Tensor, ...],
                     want: Reductions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(row_lse, col_lse, row_sum, col_sum)`` of the logits ``block`` yields, ``chunk`` rows at a time.

    Unrequested reductions come back empty. ``block`` must be a pure function of ``inputs``
    (anything else it reads must not need a gradient); it runs once in forward and once more
    in backward. Sums assume no ``-inf`` entries.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return _Blockwise.apply(block, n_rows, chunk, want, *inputs)
