"""Report rows as readable tables: per task, one line per (target, query, ...) and a column per metric."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Collection

STAT_KEYS = ("value", "ci_low", "ci_high", "chance")  # vary with the metric
COUNT_KEYS = ("n", "candidates", "resamples")  # one value per line, shown once
LEAD_KEYS = ("task", "target", "query")
EVALUATOR = "evaluator"  # the evaluator node a row came from (polyalign.evaluation.evaluate.evaluator_name)
CHANCE = "chance accuracy"  # the accuracy of random guesses, shown once per line


@dataclass
class PivotTable:
    """One task's rows pivoted: ``header`` and ``lines`` of cell strings, the first ``n_ids``
    columns naming the line; ``constants`` are count columns with one value over the whole
    table (shown in a caption instead)."""

    task: str
    header: list[str]
    lines: list[list[str]]
    n_ids: int
    constants: dict[str, Any] = field(default_factory=dict)
    intervals: list[str] = field(default_factory=list)

    def caption(self) -> str:
        """'n=256, candidates=32' plus a note on which cells show intervals."""
        text = ", ".join(f"{k}={v}" for k, v in self.constants.items())
        if self.intervals:
            text += ("; " if text else "") + f"[low, high] = bootstrap interval ({', '.join(self.intervals)})"
        return text


def identity_fields(rows: list[dict[str, Any]]) -> list[str]:
    """Fields that tell rows apart besides the metric: task, target, query, then others seen (not those
    holding lists or mappings, such as a confusion matrix: report.json keeps them); the
    :data:`EVALUATOR` that produced a row only where two evaluator nodes gave rows alike in the others
    (so runs evaluated before rows named it still line up with newer ones)."""
    seen = [k for k in LEAD_KEYS if any(k in r for r in rows)]
    for r in rows:
        for k, v in r.items():
            if (k not in seen and k != "metric" and k != EVALUATOR and k not in STAT_KEYS and k not in COUNT_KEYS
                    and not isinstance(v, (list, dict))):
                seen.append(k)
    by_line: dict[tuple, set] = {}
    for r in rows:
        by_line.setdefault(tuple(hashable(r.get(k)) for k in [*seen, "metric"]), set()).add(r.get(EVALUATOR))
    return seen + [EVALUATOR] if any(len(names - {None}) > 1 for names in by_line.values()) else seen


def cell_text(value: Any) -> str:
    """A cell: query lists joined with '+', floats in their shortest form (0.25, not 0.250000)."""
    if isinstance(value, (list, tuple)):
        return "+".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


def hashable(value: Any) -> Any:
    """Lists (queries) as tuples, so they can key a dict."""
    return tuple(value) if isinstance(value, list) else value


def metric_cell(row: dict[str, Any], interval: bool = True) -> str:
    """'0.974 [0.962, 0.983]' with an interval (when the row has one and ``interval``), else '0.974'."""
    text = f"{float(row['value']):.3f}"
    if interval and "ci_low" in row and "ci_high" in row:
        text += f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
    return text


def pivot_rows(rows: list[dict[str, Any]], interval_metrics: Collection[str] | None = None) -> list[PivotTable]:
    """One :class:`PivotTable` per task, in the order tasks first appear; cells of
    ``interval_metrics`` (default: every metric) show their bootstrap interval."""
    tasks: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        tasks.setdefault(str(r.get("task", "")), []).append(r)
    return [_pivot_task(task, task_rows, interval_metrics) for task, task_rows in tasks.items()]


def _pivot_task(task: str, rows: list[dict[str, Any]], interval_metrics: Collection[str] | None) -> PivotTable:
    def shown(metric: str) -> bool:
        return interval_metrics is None or metric in interval_metrics

    ids = [k for k in identity_fields(rows) if k != "task"]
    metrics: list[str] = []
    lines: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        metric = str(r.get("metric", "value"))
        if metric not in metrics:
            metrics.append(metric)
        line = lines.setdefault(tuple(hashable(r.get(k)) for k in ids),
                                {"ids": [r.get(k) for k in ids], "metrics": {}, "counts": {}})
        line["metrics"][metric] = metric_cell(r, shown(metric))
        for k in COUNT_KEYS:
            if k in r:
                line["counts"].setdefault(k, r[k])
        if metric == "accuracy" and "chance" in r:
            line["counts"][CHANCE] = f"{float(r['chance']):.3f}"
    counts = [k for k in (*COUNT_KEYS, CHANCE) if any(k in line["counts"] for line in lines.values())]
    constants = {}
    for k in counts:
        values = {line["counts"].get(k) for line in lines.values()}
        if len(values) == 1:
            constants[k] = values.pop()
    varying = [k for k in counts if k not in constants]
    header = ids + metrics + varying
    body = [[cell_text(v) for v in line["ids"]] + [line["metrics"].get(m, "") for m in metrics]
            + [cell_text(line["counts"].get(k)) for k in varying] for line in lines.values()]
    intervals = [m for m in metrics if shown(m) and any("ci_low" in r and r.get("metric") == m for r in rows)]
    return PivotTable(task, header, body, len(ids), constants, intervals)
