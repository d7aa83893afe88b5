"""Gradient checkpointing for the built-in encoders' blocks (``grad_checkpointing: true``).

A checkpointed block keeps only its input during the forward pass and recomputes its
activations in backward (``torch.utils.checkpoint``, non-reentrant): activation memory falls to
about one block's, for about one more forward of the encoder. Dropout draws the same masks in
the recomputation, and running statistics (BatchNorm) are updated once, not twice.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from polyalign.core.buffers import kept_buffers


class _CheckpointedForward:
    """Stands in for a block's ``forward``: runs it under ``checkpoint`` while a graph is built."""

    def __init__(self, block: nn.Module):
        self.block = block
        self.forward: Callable[..., Any] = type(block).forward

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return self.forward(self.block, *args, **kwargs)
        return checkpoint(self.forward, self.block, *args, use_reentrant=False, context_fn=self._contexts, **kwargs)

    def _contexts(self) -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
        return contextlib.nullcontext(), kept_buffers(self.block)  # the recomputation leaves statistics alone


def checkpoint_blocks(blocks: Iterable[nn.Module]) -> None:
    """Checkpoint each of ``blocks`` (their parameter names and state dict keys are unchanged)."""
    for block in blocks:
        block.forward = _CheckpointedForward(block)  # type: ignore[method-assign]


def checkpointed_sequential(blocks: nn.Sequential, per_segment: int, x: torch.Tensor) -> torch.Tensor:
    """``blocks(x)``, its modules run ``per_segment`` at a time, each run checkpointed, while a
    graph is being built."""
    if not torch.is_grad_enabled():
        return blocks(x)
    modules = list(blocks)
    for start in range(0, len(modules), per_segment):
        x = checkpoint(_run_modules, modules[start:start + per_segment], x, use_reentrant=False,
                       context_fn=lambda: (contextlib.nullcontext(), kept_buffers(blocks)))
    return x


def _run_modules(modules: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for module in modules:
        x = module(x)
    return x
