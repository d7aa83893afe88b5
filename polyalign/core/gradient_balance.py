"""Equal pull on a shared encoder: the gradient each loss term of a weighted sum sends to a modality.

With a space per term (``model.spaces: per_term``) each term trains its own block of every embedding,
so the gradient a term sends back is known apart from the others' at its block. The encoders under
the heads are shared, though, and there one term can drown the other: late in training on redundant
data CLIP's loss is near zero on its batches while Symile's is not, so Symile's gradient at the
embeddings was 5.6x CLIP's (digit-views-3, [clip, symile], seed 0, a batch of 64 after 20 epochs) and
the encoders drift to what Symile's products need, costing CLIP's term its accuracy
(docs/choosing-an-objective.md). ``model.balance: gradients`` rescales, per modality, the gradient
each term sends to that modality's block so that every term sends the same norm: the mean of the
terms' norms, each smoothed over steps (an exponential moving average, so one batch's noise does not
swing the scale). Only the encoders see a change: each block's head has parameters of its own, and
Adam's update of a parameter does not depend on the scale of its gradient. The smoothed norms are
state of the running process, not of the checkpoint: a resumed run starts them afresh (its first
step passes the first term's gradient as it is), and each process of a distributed run keeps its own.
"""

from __future__ import annotations

from typing import Any

import torch

DECAY = 0.9
"""Weight of the previous steps in each term's smoothed gradient norm (about the last 10 steps)."""


class GradientBalance:
    """Smoothed gradient norms per (modality, term) and the factor that equalises a modality's terms."""

    def __init__(self, terms: list[str]):
        self.terms = list(terms)
        self.norms: dict[tuple[str, str], torch.Tensor] = {}

    def attach(self, modality: str, term: str, z: torch.Tensor) -> torch.Tensor:
        """``z`` as it is, with its gradient rescaled in backward (a term's block of one modality)."""
        return _Rescale.apply(z, self, (modality, term))

    def rescale(self, key: tuple[str, str], grad: torch.Tensor) -> torch.Tensor:
        """Record ``grad``'s norm for ``key`` and return it scaled to the mean over the modality's terms
        (as it is until every term has sent one gradient)."""
        norm = grad.detach().norm()
        seen = self.norms.get(key)
        self.norms[key] = norm if seen is None else DECAY * seen + (1 - DECAY) * norm
        modality = key[0]
        known = [self.norms[(modality, t)] for t in self.terms if (modality, t) in self.norms]
        if len(known) < len(self.terms):
            return grad
        target = torch.stack(known).mean()
        return grad * (target / self.norms[key].clamp_min(torch.finfo(grad.dtype).tiny))


class _Rescale(torch.autograd.Function):
    """Identity in forward; in backward the gradient passes through :meth:`GradientBalance.rescale`."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, balance: GradientBalance, key: tuple[str, str]) -> torch.Tensor:
        ctx.balance, ctx.key = balance, key
        return z.view_as(z)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return ctx.balance.rescale(ctx.key, grad), None, None
