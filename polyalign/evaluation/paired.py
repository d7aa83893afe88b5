"""Paired test of two configurations on the same test tuples: runs matched by seed, each tuple's
result under A against its result under B (the per-query ranks in ``eval/ranks.json``).

The difference is the mean over every (seed, tuple) of metric(A) - metric(B). Its 95% interval is a
paired bootstrap over seeds and over tuples within each seed; its two-sided p-value a paired
permutation test (each tuple's A and B results swapped at random: the sign of its difference flipped).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polyalign.core.errors import PolyalignError
from polyalign.files.atomic import atomic_write_text
from polyalign.files.json_file import JsonError, read_json
from polyalign.files.run_files import RANKS_JSON, RECIPE_FILE, REPORT_DIR
from polyalign.files.yaml_file import YamlError, read_yaml

from .compare import load_run, out_folder

PAIRED_MD = "paired.md"
PAIRED_JSON = "paired.json"
RESAMPLES = 10000


def per_query(metric: str, ranks: np.ndarray) -> np.ndarray:
    """Each query's value of ``metric`` from its rank: accuracy and R@1 (rank 1), topK and R@K (rank <= K),
    mrr (1 / rank), mean_rank (the rank)."""
    ranks = ranks.astype(np.float64)
    if metric == "accuracy":
        return (ranks <= 1).astype(np.float64)
    k = re.fullmatch(r"(?:top|R@)(\d+)", metric)
    if k:
        return (ranks <= int(k.group(1))).astype(np.float64)
    if metric == "mrr":
        return 1.0 / ranks
    if metric == "mean_rank":
        return ranks
    raise PolyalignError(f"--metric {metric!r} is not a per-query metric; a paired test takes accuracy, topK, "
                         f"R@K, mrr or mean_rank")


@dataclass
class PairedRow:
    """One evaluation row's paired comparison."""

    task: str
    target: str
    query: list[str]
    metric: str
    a: float
    b: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    seeds: list[int]
    tuples: int

    def line(self) -> list[str]:
        """Table cells."""
        return [self.task, self.target, "+".join(self.query), self.metric, f"{self.a:.4f}", f"{self.b:.4f}",
                f"{self.difference:+.4f}", f"[{self.ci_low:+.4f}, {self.ci_high:+.4f}]", p_text(self.p_value),
                str(len(self.seeds)), str(self.tuples)]


PAIRED_HEADER = ["task", "target", "query", "metric", "A", "B", "A - B", "95% interval", "p", "seeds", "tuples"]


def p_text(p: float) -> str:
    """A p-value as text: its resolution is 1 / (resamples + 1)."""
    floor = 1.0 / (RESAMPLES + 1)
    return f"< {2 * floor:.1g}" if p <= floor * 1.0001 else f"{p:.2g}"


def _seed_and_data(run_dir: Path) -> tuple[int, Any]:
    try:
        recipe = read_yaml(run_dir / RECIPE_FILE)
        return int(recipe["seed"]), recipe["data"]
    except (YamlError, KeyError, TypeError, ValueError) as exc:
        raise PolyalignError(f"{run_dir}: cannot read its seed and data from {RECIPE_FILE} ({exc})") from None


def read_ranks(run_dir: Path) -> dict[tuple, dict[str, Any]]:
    """A run's per-query ranks (``eval/ranks.json``) by (task, target, query)."""
    path = run_dir / REPORT_DIR / RANKS_JSON
    if not path.exists():
        raise PolyalignError(f"{run_dir} has no per-tuple ranks ({REPORT_DIR}/{RANKS_JSON}); `polyalign eval "
                             f"{run_dir}` writes them")
    try:
        records = read_json(path, "per-tuple ranks")
        return {(r["task"], r["target"], tuple(r["query"])): r for r in records}
    except (JsonError, KeyError, TypeError) as exc:
        raise PolyalignError(f"{path} cannot be read ({exc}); `polyalign eval {run_dir}` writes it again") from None


def runs_by_seed(runs: list[Path], side: str) -> dict[int, tuple[Path, Any]]:
    """Seed -> (run, its data section) of one side of a paired test; two runs of one seed are refused."""
    out: dict[int, tuple[Path, Any]] = {}
    for run in runs:
        seed, data = _seed_and_data(run)
        if seed in out:
            raise PolyalignError(f"{side}: two runs with seed {seed} ({out[seed][0]} and {run}); a paired test "
                                 f"matches one run of each side per seed")
        out[seed] = (run, data)
    return out


def paired_differences(a_runs: list[Path], b_runs: list[Path], metric: str) -> dict[tuple, list[tuple]]:
    """(task, target, query) -> per seed ``(seed, metric under A, metric under B)`` arrays over the tuples
    both runs of that seed ranked."""
    a, b = runs_by_seed(a_runs, "A"), runs_by_seed(b_runs, "B")
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise PolyalignError(f"no seed has a run on both sides (A: seeds {sorted(a)}, B: seeds {sorted(b)}); a "
                             f"paired test compares runs of the same seed, which see the same test tuples")
    out: dict[tuple, list[tuple]] = {}
    for seed in seeds:
        (run_a, data_a), (run_b, data_b) = a[seed], b[seed]
        if data_a != data_b:
            raise PolyalignError(f"seed {seed}: {run_a} and {run_b} have different data sections, so not the same "
                                 f"test tuples; a paired test needs the same data")
        ranks_a, ranks_b = read_ranks(run_a), read_ranks(run_b)
        for key in ranks_a.keys() & ranks_b.keys():
            ra, rb = ranks_a[key], ranks_b[key]
            common, ia, ib = np.intersect1d(np.asarray(ra["tuples"]), np.asarray(rb["tuples"]), return_indices=True)
            if common.size:
                out.setdefault(key, []).append((seed, per_query(metric, np.asarray(ra["ranks"])[ia]),
                                                per_query(metric, np.asarray(rb["ranks"])[ib])))
    return out


def paired_bootstrap(diffs: list[np.ndarray], rng: np.random.Generator, resamples: int = RESAMPLES) -> np.ndarray:
    """Bootstrap means of the pooled differences: seeds drawn with replacement, tuples within each drawn seed."""
    sizes = np.array([d.size for d in diffs])
    sums = np.stack([d[rng.integers(0, d.size, (resamples, d.size))].sum(axis=1) for d in diffs])  # (S, R)
    pick = rng.integers(0, len(diffs), (resamples, len(diffs)))  # (R, S) seeds per resample
    cols = np.arange(resamples)[:, None]
    return sums[pick, cols].sum(axis=1) / sizes[pick].sum(axis=1)


def sign_flip_p(diffs: np.ndarray, rng: np.random.Generator, resamples: int = RESAMPLES) -> float:
    """Two-sided p-value of a paired permutation test of mean(diffs) = 0 (random sign per pair)."""
    observed = abs(diffs.mean())
    extreme = 0
    for start in range(0, resamples, 500):
        n = min(500, resamples - start)
        signs = rng.integers(0, 2, (n, diffs.size), dtype=np.int8) * 2 - 1
        extreme += int((np.abs(signs @ diffs / diffs.size) >= observed - 1e-12).sum())
    return (extreme + 1) / (resamples + 1)


def paired_test(a_runs: list[Path], b_runs: list[Path], metric: str = "accuracy", seed: int = 0) -> list[PairedRow]:
    """Every evaluation row both sides ranked: the difference A - B, its 95% interval and p-value."""
    rows = []
    for (task, target, query), per_seed in paired_differences(a_runs, b_runs, metric).items():
        rng = np.random.default_rng(seed)
        diffs = [va - vb for _, va, vb in per_seed]
        pooled = np.concatenate(diffs)
        low, high = np.quantile(paired_bootstrap(diffs, rng), [0.025, 0.975])
        a_mean = float(np.concatenate([v for _, v, _ in per_seed]).mean())
        b_mean = float(np.concatenate([v for _, _, v in per_seed]).mean())
        rows.append(PairedRow(task, target, list(query), metric, a_mean, b_mean, float(pooled.mean()), float(low),
                              float(high), sign_flip_p(pooled, rng), [s for s, _, _ in per_seed], int(pooled.size)))
    if not rows:
        raise PolyalignError("the two sides share no evaluation row with per-tuple ranks (zero_shot and "
                             "retrieval record them)")
    report = load_run(a_runs[0]).rows  # the rows in the order and with the metric names the reports use
    order = list(dict.fromkeys((r.get("task"), r.get("target"), tuple(r.get("query") or [])) for r in report))
    names: dict[tuple, list[str]] = {}
    for r in report:
        names.setdefault((r.get("task"), r.get("target"), tuple(r.get("query") or [])), []).append(str(r.get("metric")))
    for row in rows:
        row.metric = native_name(metric, names.get((row.task, row.target, tuple(row.query)), []))
    return sorted(rows, key=lambda r: order.index(k) if (k := (r.task, r.target, tuple(r.query))) in order
                  else len(order))


def native_name(metric: str, names: list[str]) -> str:
    """``metric`` as the row's evaluator names it: retrieval's R@1 for accuracy, R@5 for top5 (and back)."""
    k = 1 if metric == "accuracy" else (int(m.group(1)) if (m := re.fullmatch(r"(?:top|R@)(\d+)", metric)) else None)
    if k is None or metric in names:
        return metric
    same = [n for n in names if n == f"R@{k}" or n == f"top{k}" or (k == 1 and n == "accuracy")]
    return same[0] if same else metric


def write_paired(rows: list[PairedRow], a_label: str, b_label: str, out_dir: str | Path) -> list[Path]:
    """``paired.md`` and ``paired.json`` in ``out_dir``."""
    out = out_folder(out_dir)
    md = ["# Paired comparison", "", f"A = {a_label}", f"B = {b_label}", "",
          ("A - B: mean over (seed, tuple) of the difference; interval: paired bootstrap over seeds and tuples; "
           f"p: paired permutation test (two-sided, {RESAMPLES} sign flips)."), "",
          "| " + " | ".join(PAIRED_HEADER) + " |", "|" + "---|" * len(PAIRED_HEADER)]
    md += ["| " + " | ".join(r.line()) + " |" for r in rows]
    atomic_write_text(out / PAIRED_MD, "\n".join(md) + "\n")
    atomic_write_text(out / PAIRED_JSON, json.dumps({"a": a_label, "b": b_label, "rows": [vars(r) for r in rows]},
                                                    indent=2) + "\n")
    return [out / PAIRED_MD, out / PAIRED_JSON]
