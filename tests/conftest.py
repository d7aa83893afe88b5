"""Shared fixtures: tiny recipes and a fresh plugin manager per test that needs one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "polyalign" / "recipes"

# Tiny models train fastest on one intra-op thread (and a second core stays free for subprocesses).
torch.set_num_threads(1)

TINY_XOR = ["data.n_train=512", "data.n_val=128", "data.n_test=128", "train.batch_size=64",
            "train.epochs=2", "train.warmup_steps=0", "train.log_every=2"]


@pytest.fixture
def tiny_xor() -> list[str]:
    """Overrides that make an xor recipe train in about a second."""
    return list(TINY_XOR)


@pytest.fixture
def xor_clip() -> Path:
    return RECIPES / "xor-clip.yaml"
