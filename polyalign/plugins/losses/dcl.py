"""Loss ``dcl``: decoupled contrastive learning (Yeh et al., ECCV 2022) over modality pairs.

InfoNCE with the positive removed from the denominator, symmetric in the two modalities of
each pair: ``½·mean_i[(LSE_{j≠i} S_ij − S_ii) + (LSE_{j≠i} S_ji − S_ii)]``, ``S = z[m] z[n]ᵀ/τ``.
It can go below zero. Pair graph, missing rows and score are those of ``clip``.
"""

from __future__ import annotations

from .clip import ClipConfig, ClipLoss


class DclConfig(ClipConfig):
    """Same options as ``clip``."""


class DclLoss(ClipLoss):
    """Pairwise InfoNCE without the positive in the denominators; mean over pairs."""

    exclude_positive = True


def build_dcl(config: DclConfig) -> DclLoss:
    return DclLoss(config)
