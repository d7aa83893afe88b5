"""Shared machinery of pairwise objectives: the pair graph, masked rows, symmetric InfoNCE."""

from __future__ import annotations

from itertools import combinations
from typing import Literal

import torch

from polyalign.plugin import PolyalignError

from .blockwise import Reductions, reduce_blockwise

PairGraph = Literal["full", "star"]


def pair_graph(names: list[str], graph: PairGraph = "full", anchor: str | None = None) -> list[tuple[str, str]]:
    """All pairs (``full``) or the pairs containing ``anchor`` (``star``; default: first name).

    Pair terms are named ``m-n``; names that would make two of them equal (``a`` and ``b-c``,
    ``a-b`` and ``c``) are refused (a recipe allows no ``-`` in a modality name)."""
    if graph == "full":
        pairs = list(combinations(names, 2))
    else:
        anchor = anchor if anchor is not None else names[0]
        if anchor not in names:
            raise PolyalignError(f"star anchor {anchor!r} is not among the modalities ({', '.join(names)})")
        pairs = [(anchor, n) for n in names if n != anchor]
    if len({f"{m}-{n}" for m, n in pairs}) < len(pairs):
        raise PolyalignError(f"the modality names {', '.join(map(repr, names))} give two pair terms the same "
                             f"name m-n; use names without '-'")
    return pairs


def paired_rows(present: dict[str, torch.Tensor], m: str, n: str) -> torch.Tensor:
    """Indices of the rows where both ``m`` and ``n`` are present."""
    return (present[m] & present[n]).nonzero(as_tuple=True)[0]


def sum_of_cosines(queries: dict[str, torch.Tensor], candidates: dict[str, torch.Tensor]) -> torch.Tensor:
    """Pairwise scoring rule: ``Σ_q Σ_c z_q · z_c`` over every (query, candidate) pair of modalities -> ``(Q, C)``.

    Pairs inside the candidate tuple are left out: they do not depend on the query (and with one
    candidate modality there are none), so ranking ``C -> Q`` uses the transpose of ``Q -> C``.
    """
    return summed_query(queries) @ summed_query(candidates).T


def summed_query(queries: dict[str, torch.Tensor]) -> torch.Tensor:
    """``Σ_q z_q``: the vector whose inner product with a candidate is :func:`sum_of_cosines`."""
    return sum(queries.values())


def _pair_logits(start: int, stop: int, zm: torch.Tensor, zn: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return scale * zm[start:stop] @ zn.T


def symmetric_info_nce(zm: torch.Tensor, zn: torch.Tensor, scale: torch.Tensor,
                       chunk_size: int | None = None) -> torch.Tensor:
    """``½(CE(S) + CE(Sᵀ))`` with ``S = scale·zm znᵀ`` and row i's positive at column i.

    ``chunk_size`` computes it ``chunk_size`` rows at a time (memory linear in N).
    """
    n = zm.shape[0]
    pos = scale * (zm * zn).sum(-1)
    if chunk_size is None or chunk_size >= n:
        logits = _pair_logits(0, n, zm, zn, scale)
        row, col = logits.logsumexp(1), logits.logsumexp(0)
    else:
        row, col, _, _ = reduce_blockwise(_pair_logits, n, chunk_size, (zm, zn, scale),
                                          Reductions(row_lse=True, col_lse=True))
    return 0.5 * ((row - pos).mean() + (col - pos).mean())
