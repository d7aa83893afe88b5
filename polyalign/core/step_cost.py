"""What one step of a loss costs on this machine, against a pairwise CLIP step on the same batch.

Each built-in loss counts the floating-point operations of one forward and backward pass on a
batch of ``N`` tuples of ``M`` modalities of size ``d`` (:meth:`polyalign.core.loss.Loss.step_flops`);
this machine's rate is measured, not assumed, by timing the reference computation that CLIP's
count describes (pairwise InfoNCE, forward and backward) on the run's device. Encoders cost the
same whatever the loss, so they are left out: the figures are the loss's own.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

ENTRY_FLOPS = 30.0
"""Operations per logit besides the matmuls (exp, log, softmax weights, masks: forward and backward)."""

SLOW_RATIO = 10.0
"""A loss step costing more than this many CLIP steps on the same batch earns a note."""

SLOW_SECONDS = 60.0
"""So does a loss step estimated to take longer than this."""

RATE_ROWS = 512
"""Rows of the timed reference step on a CPU (capped, so that measuring takes milliseconds)."""

GPU_RATE_ROWS = 8192
"""Rows of the timed reference step on a GPU, whatever the batch: a smaller step only times the
kernel launches (an H200: 2.1 GFLOP/s at 128 rows, 2,833 at 8,192; at 128 it put a 7 ms Symile step at 200 ms)."""

MIN_RATE = 1e9
"""Operations a second below any machine that runs torch on the reference step: a step that is
not slow at this rate is not slow anywhere, and needs no measurement to say so."""


def contrast_flops(rows: int | float, cols: int | float, d: int, matmuls: float = 3.0) -> float:
    """Operations of ``rows x cols`` logits that each cost a ``d``-long dot product in ``matmuls``
    matrix products (forward 1, backward 2) plus :data:`ENTRY_FLOPS`."""
    return float(rows) * float(cols) * (2.0 * matmuls * d + ENTRY_FLOPS)


def clip_flops(n: int, d: int, m: int) -> float:
    """One step of pairwise CLIP over all ``M(M-1)/2`` pairs: the yardstick."""
    return m * (m - 1) / 2 * contrast_flops(n, n, d)


@dataclass(frozen=True)
class StepCost:
    """One loss step's estimated operations and seconds, and its ratio to a CLIP step."""

    flops: float
    seconds: float
    ratio: float
    rate: float

    @property
    def slow(self) -> bool:
        """Whether the step is worth a note before training starts."""
        return self.ratio > SLOW_RATIO or self.seconds > SLOW_SECONDS


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured_rate(d: int, device: torch.device | str = "cpu", rows: int = RATE_ROWS, budget: float = 0.3) -> float:
    """Operations per second of this machine on the reference step (pairwise InfoNCE of ``rows``
    unit vectors of size ``d``, forward and backward): the fastest of the runs that fit in
    ``budget`` seconds (5 to 100 of them), since a busy machine only ever slows a run down."""
    device = torch.device(device)
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(rows, d, generator=g), dim=1).to(device).requires_grad_()
    y = torch.nn.functional.normalize(torch.randn(rows, d, generator=g), dim=1).to(device).requires_grad_()
    times: list[float] = []
    spent = time.perf_counter()
    while len(times) < 6 or (time.perf_counter() - spent < budget and len(times) < 101):
        _sync(device)
        start = time.perf_counter()
        logits = 14.0 * x @ y.T
        pos = logits.diagonal()
        loss = (logits.logsumexp(1) - pos).mean() + (logits.logsumexp(0) - pos).mean()
        loss.backward()
        _sync(device)
        times.append(time.perf_counter() - start)
    return contrast_flops(rows, rows, d) / max(min(times[1:]), 1e-9)  # the first run warms up


def estimate_step(loss: torch.nn.Module, n: int, d: int, m: int, rate: float) -> StepCost | None:
    """The loss's step at ``rate`` operations a second, or None when it does not count its operations."""
    counter = getattr(loss, "step_flops", None)
    flops = counter(n, d, m) if counter is not None else None
    if flops is None:
        return None
    return StepCost(flops, flops / rate, flops / clip_flops(n, d, m), rate)


def duration(seconds: float) -> str:
    """``seconds`` in the unit a person reads best (two significant digits)."""
    for unit, size, below in (("ms", 1e-3, 1), ("s", 1, 120), ("min", 60, 7200), ("h", 3600, 2 * 86400)):
        if seconds < below:
            break
    else:
        unit, size = "days", 86400
    value = seconds / size
    return f"{float(f'{value:.2g}'):g} {unit}" if value < 1e6 else f"{value:.1e} {unit}"


def step_cost_line(cost: StepCost, loss_name: str, n: int, d: int, m: int) -> str:
    """One line: the estimate, its basis, and what to do when the step is slow."""
    line = (f"one step of loss {loss_name} alone, encoders not counted (M = {m}, batch {n}, d = {d}) ≈ "
            f"{cost.flops:.2g} operations, about {duration(cost.seconds)} at this machine's measured "
            f"{cost.rate / 1e9:.3g} GFLOP/s, {cost.ratio:.3g}x a CLIP step on the same batch "
            f"(validate --check-data times a whole step)")
    if cost.slow:
        line += ("; a cheaper form of the objective (for symile, negatives: per_modality) or a smaller batch "
                 "keeps steps near CLIP's: docs/choosing-an-objective.md")
    return line


def recipe_step_cost(recipe, loss: torch.nn.Module, device: torch.device | str,
                     only_slow: bool = False) -> tuple[StepCost, str] | None:
    """The estimate for ``recipe``'s batch and its line, or None when the loss counts no operations
    (or, with ``only_slow``, when the step cannot be slow even at :data:`MIN_RATE`: nothing is measured)."""
    n, d, m = recipe.train.loss_rows, recipe.model.embed_dim, len(recipe.modalities)
    if only_slow:
        bound = estimate_step(loss, n, d, m, MIN_RATE)
        if bound is None or not bound.slow:
            return None
    rows = GPU_RATE_ROWS if torch.device(device).type == "cuda" else min(n, RATE_ROWS)
    cost = estimate_step(loss, n, d, m, measured_rate(d, device, rows=rows))
    if cost is None or not math.isfinite(cost.flops):
        return None
    name = "+".join(node.plugin for node in recipe.losses)
    return cost, step_cost_line(cost, name, n, d, m)
