"""Evaluator ``missing_modality``: zero-shot scores from every subset of query modalities,
and test-time dropout curves with bootstrap intervals.

For a target ``t`` of a model with M modalities the query modalities are the M - 1 others.

* Task ``missing_modality``: one row per metric for every non-empty subset S of the query
  modalities (2^(M-1) - 1 subsets), scored with the loss's own rule on the rows of the split
  that have ``t`` and every modality of S. With ``missing.strategy: learned`` the modalities
  left out of S are given the model's learned placeholder, as in training; with ``drop`` they
  are left out of the score.
* Task ``dropout_curve``: on the rows that have every modality, each query modality (and, with
  two or more, ``all`` of them independently) is dropped from a row's query with probability
  ``rate``. ``value`` is the exact expectation over those draws; ``ci_low``/``ci_high`` are the
  percentile bootstrap interval over ``resamples`` resamples, each drawing the rows with
  replacement and the dropouts afresh (seeded).
* A row that loses every query modality has nothing to rank with, so it counts as a uniformly
  random guess: its metrics are the exact expectations of a random ranking of the candidates
  (accuracy K/C with K correct among C). It is neither left out of the mean (that would flatter
  the curve) nor counted as always wrong (that would put the curve below chance).

Every row also carries ``chance``: the same metric for random guesses on its rows.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from polyalign.plugin import EvalContext, PolyalignError, per_query_metrics

from .zero_shot import candidate_set, zero_shot_rows

TASK = "missing_modality"
CURVE_TASK = "dropout_curve"
ALL = "all"
_GATHER_BUDGET = 4_000_000  # elements gathered per resampling chunk


class MissingModalityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str | None = Field(None, description="one modality to predict (or use targets)")
    targets: list[str] | Literal["all"] | None = Field(
        None, description="modalities to predict in turn; all = every modality (the default)")
    candidates: Literal["unique", "split"] = Field(
        "unique", description="unique = each distinct target value once; split = every target in the split")
    match: Literal["index", "label"] = Field(
        "index", description="index = the query's own target is correct; label = any candidate with its label")
    top_k: list[PositiveInt] = Field(default_factory=lambda: [1, 5], min_length=1,
                                     description="k of the top-k accuracies")
    rates: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75],
                               description="test-time dropout rates of the curve ([] = no curve)")
    resamples: int = Field(1000, ge=10, le=1_000_000, description="bootstrap resamples for the intervals "
                                                                  "(each keeps one mean per metric and point)")
    confidence: float = Field(0.95, gt=0, lt=1, description="coverage of the bootstrap interval")
    seed: int | None = Field(None, description="resampling seed (default: the recipe's seed)")

    @field_validator("rates")
    @classmethod
    def _rates_in_unit_interval(cls, rates: list[float]) -> list[float]:
        bad = [r for r in rates if not 0.0 <= r <= 1.0]
        if bad:
            raise ValueError(f"dropout rates must be in [0, 1], got {bad[0]}")
        return sorted(set(rates))

    @model_validator(mode="after")
    def _one_of_target_targets(self) -> "MissingModalityConfig":
        if self.target is not None and self.targets is not None:
            raise ValueError("give either target (one modality) or targets (a list, or all), not both")
        return self


def query_subsets(query: list[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``query``, smallest first, each in ``query`` order."""
    return [s for k in range(1, len(query) + 1) for s in combinations(query, k)]


def metric_names(top_k: list[int]) -> list[str]:
    """Names of the metrics in row order (``accuracy``, ``top5``..., ``mrr``)."""
    return list(per_query_metrics(torch.ones(1), top_k))


def chance_metrics(n_correct: torch.Tensor, n_candidates: int, top_k: list[int]) -> dict[str, torch.Tensor]:
    """Per-query expected metrics of a uniformly random ranking of ``n_candidates`` candidates
    of which ``n_correct[i]`` are correct (float64)."""
    c = int(n_candidates)
    out = {name: torch.zeros(n_correct.shape[0], dtype=torch.float64) for name in metric_names(top_k)}
    for k_correct in n_correct.unique().tolist():
        if k_correct <= 0:
            continue  # no correct candidate: every metric is 0
        wrong = c - int(k_correct)
        t = torch.arange(wrong + 1, dtype=torch.float64)
        # survival[j] = P(rank > j) = P(the first j ranked are all wrong), j = 0 .. wrong + 1
        survival = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod((wrong - t) / (c - t), 0)])
        pmf = survival[:-1] - survival[1:]  # P(rank = r), r = 1 .. wrong + 1
        rows = n_correct == k_correct
        for k in top_k:
            name = "accuracy" if k == 1 else f"top{k}"
            out[name][rows] = float(1.0 - survival[min(k, wrong + 1)])
        out["mrr"][rows] = float((pmf / torch.arange(1, wrong + 2, dtype=torch.float64)).sum())
    return out


def subset_probabilities(drop: torch.Tensor) -> torch.Tensor:
    """P(kept set = S) for every bitmask S of ``k`` modalities dropped independently at ``drop``."""
    k = drop.numel()
    bits = (torch.arange(2 ** k)[:, None] >> torch.arange(k)[None, :]) & 1
    keep = drop.double()[None, :]
    return torch.where(bits.bool(), 1.0 - keep, keep).prod(dim=1)


def expected_means(values: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """Exact expected metric over the dropout draws: ``values`` is (metrics, 2^k, rows)."""
    return (values.mean(dim=-1) * subset_probabilities(drop)[None, :]).sum(dim=-1)


def resample_means(values: torch.Tensor, drop: torch.Tensor, resamples: int,
                   generator: torch.Generator) -> torch.Tensor:
    """(metrics, resamples) means: each resample draws the rows with replacement and drops query
    modality j of each drawn row with probability ``drop[j]``; ``values[:, S, i]`` is row i's metric
    when the kept query modalities form bitmask S (S = 0: random guess)."""
    k = drop.numel()
    n = values.shape[-1]
    weights = 2 ** torch.arange(k)
    chunk = max(1, _GATHER_BUDGET // max(1, n * values.shape[0]))
    out = []
    done = 0
    while done < resamples:
        b = min(chunk, resamples - done)
        idx = torch.randint(n, (b, n), generator=generator)
        kept = torch.rand(b, n, k, generator=generator, dtype=torch.float64) >= drop.double()
        subset = (kept.long() * weights).sum(dim=-1)
        out.append(values[:, subset, idx].mean(dim=-1))
        done += b
    return torch.cat(out, dim=1)


def percentile_interval(means: torch.Tensor, confidence: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile bootstrap interval per metric from (metrics, resamples) means."""
    q = torch.tensor([(1.0 - confidence) / 2, (1.0 + confidence) / 2], dtype=means.dtype)
    low, high = torch.quantile(means, q, dim=1)
    return low, high


class MissingModality:
    """Zero-shot scores from every subset of query modalities, and test-time dropout curves with bootstrap intervals

    Zero-shot scores from every query subset, and dropout curves, for each target."""

    name = "missing_modality"
    Options = MissingModalityConfig

    def __init__(self, config: MissingModalityConfig):
        self.config = config

    def targets(self, ctx: EvalContext) -> list[str]:
        """The target modalities, checked against the model's."""
        cfg = self.config
        names = ctx.modalities
        if cfg.target is not None:
            wanted = [cfg.target]
        elif cfg.targets is None or cfg.targets == ALL:
            wanted = list(names)
        else:
            wanted = list(cfg.targets)
        bad = [t for t in wanted if t not in names]
        if bad:
            raise PolyalignError(f"missing_modality target {bad[0]!r} is not a modality of the model "
                                 f"({', '.join(names)})")
        return wanted

    def __call__(self, ctx: EvalContext) -> list[dict[str, Any]]:
        seed = self.config.seed if self.config.seed is not None else ctx.seed
        generator = torch.Generator().manual_seed(seed)
        rows: list[dict[str, Any]] = []
        for target in self.targets(ctx):
            rows += self.target_rows(ctx, target, generator)
        return rows

    def _chance(self, ctx: EvalContext, target: str, rows: torch.Tensor) -> tuple[dict[str, torch.Tensor], int]:
        cfg = self.config
        _, correct = candidate_set(ctx, target, cfg.candidates, cfg.match, rows)
        return chance_metrics(correct.sum(dim=1), correct.shape[1], cfg.top_k), int(correct.shape[1])

    def target_rows(self, ctx: EvalContext, target: str, generator: torch.Generator) -> list[dict[str, Any]]:
        """The subset rows and the dropout-curve rows of one target."""
        cfg = self.config
        names = metric_names(cfg.top_k)
        _, present = ctx.embeddings()
        query = [m for m in ctx.modalities if m != target]
        complete = present[target].clone()
        for q in query:
            complete &= present[q]
        n_complete = int(complete.sum())
        table: dict[int, torch.Tensor] = {}  # bitmask of kept query modalities -> (metrics, complete rows)
        out: list[dict[str, Any]] = []
        for subset in query_subsets(query):
            bits = sum(1 << query.index(q) for q in subset)
            subset_rows, ranks = zero_shot_rows(ctx, target, list(subset), cfg.candidates, cfg.match,
                                                cfg.top_k, task=TASK)
            if not subset_rows:
                continue
            values = torch.stack(list(per_query_metrics(ranks, cfg.top_k).values()))
            mask = present[target].clone()
            for q in subset:
                mask &= present[q]
            rows = mask.nonzero(as_tuple=True)[0]
            if torch.equal(mask, complete):
                table[bits] = values
            elif n_complete:
                _, complete_ranks = zero_shot_rows(ctx, target, list(subset), cfg.candidates, cfg.match,
                                                   cfg.top_k, rows_mask=complete)
                table[bits] = torch.stack(list(per_query_metrics(complete_ranks, cfg.top_k).values()))
            chance, _ = self._chance(ctx, target, rows)
            low, high = percentile_interval(
                resample_means(values[:, None, :], torch.empty(0), cfg.resamples, generator), cfg.confidence)
            for row in subset_rows:
                j = names.index(row["metric"])
                row.update(ci_low=float(low[j]), ci_high=float(high[j]),
                           chance=float(chance[row["metric"]].mean()), resamples=cfg.resamples)
            out += subset_rows
        if cfg.rates and n_complete:
            out += self._curve_rows(ctx, target, query, complete, table, generator)
        return out

    def _curve_rows(self, ctx: EvalContext, target: str, query: list[str], complete: torch.Tensor,
                    table: dict[int, torch.Tensor], generator: torch.Generator) -> list[dict[str, Any]]:
        cfg = self.config
        names = metric_names(cfg.top_k)
        rows = complete.nonzero(as_tuple=True)[0]
        chance, n_candidates = self._chance(ctx, target, rows)
        chance_values = torch.stack([chance[name] for name in names])
        values = torch.stack([chance_values] + [table[bits] for bits in range(1, 2 ** len(query))], dim=1)
        lines = [(m, torch.tensor([1.0 if q == m else 0.0 for q in query])) for m in query]
        if len(query) > 1:
            lines.append((ALL, torch.ones(len(query))))
        out = []
        for dropped, which in lines:
            for rate in cfg.rates:
                drop = which * rate
                expected = expected_means(values, drop)
                low, high = percentile_interval(resample_means(values, drop, cfg.resamples, generator),
                                                cfg.confidence)
                for j, name in enumerate(names):
                    out.append({"task": CURVE_TASK, "target": target, "query": sorted(query),
                                "dropped": dropped, "rate": float(rate), "metric": name,
                                "value": float(expected[j]), "ci_low": float(low[j]), "ci_high": float(high[j]),
                                "chance": float(chance[name].mean()), "n": int(rows.numel()),
                                "candidates": n_candidates, "resamples": cfg.resamples})
        return out
