"""Shared machinery of pairwise objectives: the pair graph and masked row selection."""

from __future__ import annotations

from itertools import combinations
from typing import Literal

import torch

from polyalign.core.errors import PolyalignError

PairGraph = Literal["full", "star"]


def pair_graph(names: list[str], graph: PairGraph = "full", anchor: str | None = None) -> list[tuple[str, str]]:
    """All pairs (``full``) or the pairs containing ``anchor`` (``star``; default: first name)."""
    if graph == "full":
        return list(combinations(names, 2))
    anchor = anchor if anchor is not None else names[0]
    if anchor not in names:
        raise PolyalignError(f"star anchor {anchor!r} is not among the modalities ({', '.join(names)})")
    return [(anchor, n) for n in names if n != anchor]


def paired_rows(present: dict[str, torch.Tensor], m: str, n: str) -> torch.Tensor:
    """Indices of the rows where both ``m`` and ``n`` are present."""
    return (present[m] & present[n]).nonzero(as_tuple=True)[0]


def sum_of_cosines(queries: dict[str, torch.Tensor], candidates: torch.Tensor) -> torch.Tensor:
    """Pairwise scoring rule: ``Σ_q z_q · z_t`` -> ``(Q, C)``."""
    return sum(q @ candidates.T for q in queries.values())
