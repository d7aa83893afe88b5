"""Which rows of a batch a loss may use when some modalities are missing."""

from __future__ import annotations

import torch


def complete_rows(present: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    """Indices of the rows where every modality in ``names`` is present."""
    mask = present[names[0]].clone()
    for m in names[1:]:
        mask &= present[m]
    return mask.nonzero(as_tuple=True)[0]


def all_present(present: dict[str, torch.Tensor], names: list[str]) -> bool:
    """True when no row of ``names`` is missing."""
    return all(bool(present[m].all()) for m in names)


def zero_loss(embeddings: dict[str, torch.Tensor]) -> torch.Tensor:
    """A zero that keeps every embedding in the graph (for a batch with nothing to contrast)."""
    return sum(z.sum() for z in embeddings.values()) * 0.0
