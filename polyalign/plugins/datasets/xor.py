"""Dataset ``xor``: the Symile paper's binary XOR task (§5.1), generated in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from polyalign.plugin import MemoryNeed, Sample

SAMPLE_BYTES = 1200
"""Memory of one generated tuple, a dict of three small float32 arrays (tracemalloc measures about 1340)."""


class XorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    d_v: int = Field(5, ge=1, le=16, description="bits per vector")
    p_hat: float = Field(1.0, ge=0, le=1, description="probability that c = a XOR b (else c = a)")
    d_shared: int = Field(0, ge=0, le=16, description="bits of one more random vector appended to a, b and c "
                                                      "alike (information every pair shares)")
    n_train: int = Field(10000, ge=1, description="train tuples")
    n_val: int = Field(1000, ge=0, description="val tuples")
    n_test: int = Field(1000, ge=0, description="test tuples")
    seed: int | None = Field(None, description="data seed (default: the recipe's seed)")

    def memory_need(self, context: dict) -> MemoryNeed:
        """Every tuple of the three splits is generated in memory."""
        n = self.n_train + self.n_val + self.n_test
        return MemoryNeed(float(n) * SAMPLE_BYTES, f"{n} tuples generated in memory x {SAMPLE_BYTES} bytes",
                          "lower n_train, n_val or n_test")


def generate_xor(n: int, d_v: int, p_hat: float, rng: np.random.Generator, d_shared: int = 0) -> list[Sample]:
    """``a, b ~ Bernoulli(0.5)^d_v``; one switch per sample picks ``c = a XOR b`` or ``c = a``;
    with ``d_shared``, one more ``r ~ Bernoulli(0.5)^d_shared`` is appended to each of a, b, c
    (so b's ``r`` bits are known from a or c alone, its first ``d_v`` bits only from both)."""
    a = rng.integers(0, 2, size=(n, d_v))
    b = rng.integers(0, 2, size=(n, d_v))
    switch = rng.random(n) < p_hat
    c = np.where(switch[:, None], a ^ b, a)
    if d_shared:  # drawn after the rest, so d_shared = 0 keeps every earlier data set
        r = rng.integers(0, 2, size=(n, d_shared))
        a, b, c = (np.concatenate([x, r], 1) for x in (a, b, c))
    return [{"a": a[i].astype(np.float32), "b": b[i].astype(np.float32), "c": c[i].astype(np.float32)}
            for i in range(n)]


class XorDataset:
    """Symile paper's binary XOR: c = a XOR b with probability p_hat, else c = a (3 modalities)

    Three modalities ``a``, ``b``, ``c`` of ``d_v + d_shared`` bits each."""

    name = "xor"
    Options = XorConfig

    modalities = ("a", "b", "c")
    root: Path | None = None

    def __init__(self, config: XorConfig, seed: int = 0):
        rng = np.random.default_rng(config.seed if config.seed is not None else seed)
        sizes = {"train": config.n_train, "val": config.n_val, "test": config.n_test}
        self._splits = {name: generate_xor(n, config.d_v, config.p_hat, rng, config.d_shared)
                        for name, n in sizes.items()}

    def split(self, name: str) -> list[Sample]:
        return self._splits[name]
