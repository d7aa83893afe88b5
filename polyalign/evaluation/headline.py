"""A configuration's headline: the mean of chosen evaluation rows (by default every one-from-rest accuracy)
over its runs, with a percentile bootstrap interval over seeds and test tuples, and its paired test.

Rows are chosen by patterns ``TASK/TARGET_from_QUERY/METRIC`` (the names ``polyalign eval`` prints), each
part a shell pattern (``*``, ``?``); the query ``rest`` means every modality but the target's, so
``zero_shot/*_from_rest/accuracy`` is the accuracy of each modality retrieved from all the others.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polyalign.core.errors import PolyalignError, shown

from .compare import RunReport, load_run
from .paired import RESAMPLES, PairedRow, paired_bootstrap, per_query, read_ranks, runs_by_seed, sign_flip_p

DEFAULT_HEADLINES = (["zero_shot/*_from_rest/accuracy"], ["retrieval/*_from_rest/R@1"])
"""Tried in turn when no ``--headline`` is given: the first that selects rows of every run is the headline."""
CHUNK = 1000  # bootstrap resamples drawn at once


@dataclass(frozen=True)
class Pattern:
    """One ``TASK/TARGET_from_QUERY/METRIC`` pattern."""

    task: str
    target: str
    query: str
    metric: str

    def matches(self, row: dict[str, Any], modalities: set[str]) -> bool:
        """Whether ``row`` is one the pattern chooses (``modalities``: every name the run's rows use)."""
        target = str(row.get("target", ""))
        query = sorted(row.get("query") or [])
        if self.query == "rest":
            query_ok = query == sorted(modalities - set(target.split("+")))
        else:
            query_ok = fnmatch.fnmatchcase("+".join(query), self.query)
        return (query_ok and fnmatch.fnmatchcase(str(row.get("task", "")), self.task)
                and fnmatch.fnmatchcase(target, self.target)
                and fnmatch.fnmatchcase(str(row.get("metric")), self.metric))


def parse_pattern(text: str) -> Pattern:
    """``zero_shot/*_from_rest/accuracy`` -> its four parts; a malformed pattern says what to give."""
    parts = text.split("/")
    target, sep, query = parts[1].partition("_from_") if len(parts) == 3 else ("", "", "")
    if not sep or not all([parts[0], target, query, parts[2]]):
        raise PolyalignError(f"--headline {shown(text)}: give TASK/TARGET_from_QUERY/METRIC, each part a pattern "
                             f"(e.g. zero_shot/*_from_rest/accuracy; QUERY 'rest' = every other modality)")
    return Pattern(parts[0], target, query, parts[2])


def row_name(row: dict[str, Any]) -> str:
    """``task/target_from_query/metric`` of an evaluation row."""
    return f"{row.get('task')}/{row.get('target')}_from_{'+'.join(row.get('query') or [])}/{row.get('metric')}"


def modalities_of(rows: list[dict[str, Any]]) -> set[str]:
    """Every modality the rows query from (a target may be no modality: linear_probe's ``class``)."""
    return {m for r in rows for m in r.get("query") or [] if m}


def chosen_rows(rows: list[dict[str, Any]], patterns: list[Pattern]) -> list[dict[str, Any]]:
    """The rows any of ``patterns`` chooses, in report order."""
    names = modalities_of(rows)
    return [r for r in rows if any(p.matches(r, names) for p in patterns)]


@dataclass
class Headline:
    """One configuration's headline: the mean over its runs of each run's mean of the chosen rows."""

    label: str
    value: float
    ci_low: float | None
    ci_high: float | None
    interval: str  # what was resampled: "seeds and tuples", "seeds" or "" (one run, no tuples)
    runs: int
    rows: list[str]  # the chosen rows' names
    values: list[float]  # each run's headline

    def line(self) -> list[str]:
        """Table cells."""
        ci = f"[{self.ci_low:.3f}, {self.ci_high:.3f}]" if self.ci_low is not None else "—"
        return [self.label, str(self.runs), str(len(self.rows)), f"{self.value:.3f}", ci, self.interval or "—"]


HEADLINE_HEADER = ["configuration", "runs", "rows", "headline", "95% interval", "resampled"]


def tuple_table(run_dir: Path, rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The chosen rows' per-query values by test tuple, from the run's ``eval/ranks.json``: ``(tuples,
    values[R, U], present[R, U])``; None when a row has no per-query ranks (or its metric none)."""
    try:
        ranks = read_ranks(run_dir)
    except PolyalignError:
        return None
    per_row = []
    for r in rows:
        record = ranks.get((r.get("task"), r.get("target"), tuple(r.get("query") or [])))
        if record is None:
            return None
        try:
            per_row.append((np.asarray(record["tuples"]), per_query(str(r["metric"]), np.asarray(record["ranks"]))))
        except PolyalignError:  # not a per-query metric (median_rank, a linear probe's)
            return None
    tuples = np.unique(np.concatenate([t for t, _ in per_row]))
    values, present = np.zeros((len(rows), tuples.size)), np.zeros((len(rows), tuples.size))
    for i, (t, v) in enumerate(per_row):
        at = np.searchsorted(tuples, t)
        values[i, at], present[i, at] = v, 1.0
    return tuples, values, present


def tuple_bootstrap(values: np.ndarray, present: np.ndarray, rng: np.random.Generator,
                    resamples: int = RESAMPLES) -> np.ndarray:
    """Bootstrap headlines of one run: tuples drawn with replacement (the same draw for every row, so rows
    on one tuple stay together), each row's mean over its drawn tuples, then the mean over rows."""
    out = []
    size = values.shape[1]
    for start in range(0, resamples, CHUNK):
        counts = rng.multinomial(size, np.full(size, 1.0 / size), min(CHUNK, resamples - start))  # (B, U)
        sums, n = counts @ (values * present).T, counts @ present.T  # (B, R)
        out.append((sums / np.maximum(n, 1)).mean(axis=1))
    return np.concatenate(out)


def seed_bootstrap(per_seed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means over seeds drawn with replacement; ``per_seed`` is (S,) values or (S, R) resamples of
    each seed (then column r of the drawn seeds is averaged)."""
    seeds = per_seed.shape[0]
    pick = rng.integers(0, seeds, (RESAMPLES, seeds))
    if per_seed.ndim == 1:
        return per_seed[pick].mean(axis=1)
    return per_seed[pick, np.arange(RESAMPLES)[:, None]].mean(axis=1)


def headline_rows(run: RunReport, patterns: list[Pattern]) -> list[dict[str, Any]]:
    """The rows of ``run`` the headline takes; none is an error listing the run's rows."""
    rows = chosen_rows(run.rows, patterns)
    if not rows:
        raise PolyalignError(f"{run.run_dir}: no evaluation row matches --headline "
                             f"{' '.join(pattern_text(p) for p in patterns)}; its rows: "
                             f"{', '.join(dict.fromkeys(row_name(r) for r in run.rows))}")
    return rows


def pattern_text(p: Pattern) -> str:
    """A pattern as given."""
    return f"{p.task}/{p.target}_from_{p.query}/{p.metric}"


def config_headline(label: str, runs: list[RunReport], patterns: list[Pattern], seed: int = 0) -> Headline:
    """The headline of one configuration: the chosen rows of each run (the same in every run), each run's
    mean, their mean over runs and the 2.5-97.5% percentile bootstrap interval (seeds drawn with replacement,
    test tuples within each drawn seed where the runs kept per-query ranks, else seeds only)."""
    chosen = [headline_rows(run, patterns) for run in runs]
    names = [row_name(r) for r in chosen[0]]
    for run, rows in zip(runs[1:], chosen[1:]):
        if sorted(row_name(r) for r in rows) != sorted(names):
            raise PolyalignError(f"{label}: the headline takes rows {', '.join(names)} from {runs[0].run_dir} but "
                                 f"{', '.join(row_name(r) for r in rows)} from {run.run_dir}; the runs of one "
                                 f"configuration must have the same evaluation")
    values = np.array([np.mean([float(r["value"]) for r in rows]) for rows in chosen])
    rng = np.random.default_rng(seed)
    tables = [tuple_table(run.run_dir, rows) for run, rows in zip(runs, chosen)]
    if all(t is not None for t in tables):
        per_seed = np.stack([tuple_bootstrap(values, present, rng) for _, values, present in tables])
        boot, interval = seed_bootstrap(per_seed, rng), "seeds and tuples"
    elif len(runs) > 1:
        boot, interval = seed_bootstrap(values, rng), "seeds"
    else:
        boot, interval = None, ""
    low, high = (float(x) for x in np.quantile(boot, [0.025, 0.975])) if boot is not None else (None, None)
    return Headline(label, float(values.mean()), low, high, interval, len(runs), names, values.tolist())


def default_patterns(runs: list[RunReport]) -> list[Pattern] | None:
    """The first of ``DEFAULT_HEADLINES`` that chooses rows in every run, or None."""
    for texts in DEFAULT_HEADLINES:
        patterns = [parse_pattern(t) for t in texts]
        if all(chosen_rows(run.rows, patterns) for run in runs):
            return patterns
    return None


def headline_tuples(run_dir: Path, patterns: list[Pattern]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """One run's headline per test tuple over the tuples every chosen row ranked: (row names, tuples, values)."""
    run = load_run(run_dir)
    rows = headline_rows(run, patterns)
    table = tuple_table(run_dir, rows)
    if table is None:
        raise PolyalignError(f"{run_dir}: the headline rows {', '.join(row_name(r) for r in rows)} have no "
                             f"per-tuple ranks (eval/ranks.json; zero_shot and retrieval record them, for accuracy, "
                             f"topK, R@K, mrr, mean_rank); `polyalign eval {run_dir}` writes them")
    tuples, values, present = table
    everywhere = present.all(axis=0)
    return sorted(row_name(r) for r in rows), tuples[everywhere], values[:, everywhere].mean(axis=0)


def paired_headline(a_runs: list[Path], b_runs: list[Path], patterns: list[Pattern], seed: int = 0) -> PairedRow:
    """The headline of A against B on the same tuples: per seed, each tuple's headline (mean over the chosen
    rows) under A minus under B; the interval a paired bootstrap over seeds and tuples, p a permutation test."""
    a, b = runs_by_seed(a_runs, "A"), runs_by_seed(b_runs, "B")
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise PolyalignError(f"no seed has a run on both sides (A: seeds {sorted(a)}, B: seeds {sorted(b)}); a "
                             f"paired test compares runs of the same seed, which see the same test tuples")
    diffs, a_values, b_values = [], [], []
    for s in seeds:
        (run_a, data_a), (run_b, data_b) = a[s], b[s]
        if data_a != data_b:
            raise PolyalignError(f"seed {s}: {run_a} and {run_b} have different data sections, so not the same "
                                 f"test tuples; a paired test needs the same data")
        (names_a, ta, va), (names_b, tb, vb) = headline_tuples(run_a, patterns), headline_tuples(run_b, patterns)
        if names_a != names_b:
            raise PolyalignError(f"seed {s}: the headline takes rows {', '.join(names_a)} from {run_a} but "
                                 f"{', '.join(names_b)} from {run_b}; give --headline patterns both sides have")
        _, ia, ib = np.intersect1d(ta, tb, return_indices=True)
        diffs.append(va[ia] - vb[ib])
        a_values.append(va[ia])
        b_values.append(vb[ib])
    rng = np.random.default_rng(seed)
    pooled = np.concatenate(diffs)
    low, high = np.quantile(paired_bootstrap(diffs, rng), [0.025, 0.975])
    metrics = sorted({p.metric for p in patterns})
    chosen = f"{' '.join(pattern_text(p) for p in patterns)} ({len(names_a)} rows)"
    return PairedRow("headline", chosen, [], "+".join(metrics),
                     float(np.concatenate(a_values).mean()), float(np.concatenate(b_values).mean()),
                     float(pooled.mean()), float(low), float(high), sign_flip_p(pooled, rng), seeds, int(pooled.size))
