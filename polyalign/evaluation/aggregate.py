"""Runs grouped by configuration (a sweep's seeds): mean, standard deviation and a 95% percentile
bootstrap interval over the runs of each evaluation row, as Markdown, CSV, JSON and a figure."""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polyalign.core.errors import PolyalignError
from polyalign.core.report_table import cell_text, hashable, identity_fields
from polyalign.files.atomic import atomic_write_text
from polyalign.files.run_files import CHECKPOINTS_DIR, RECIPE_FILE, REPORT_DIR

from .compare import RunReport, load_run, out_folder, plot_comparison
from .paired import RESAMPLES

AGGREGATE_FILES = ("compare.md", "compare.csv", "compare.json", "compare.png")


def mean_interval(values: list[float], resamples: int = RESAMPLES, seed: int = 0) -> dict[str, float]:
    """Mean, sample standard deviation and the 95% percentile bootstrap interval of the mean over the runs
    (runs drawn with replacement, ``resamples`` times, seeded): inside the values' range, so a bounded
    metric's interval stays in its bounds. One value: a mean, no interval."""
    n = len(values)
    mean = sum(values) / n
    out = {"value": mean, "runs": n}
    if n > 1:
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        draws = np.asarray(values)[np.random.default_rng(seed).integers(0, n, (resamples, n))].mean(axis=1)
        low, high = np.quantile(draws, [0.025, 0.975])
        out.update(std=std, ci_low=min(float(low), mean), ci_high=max(float(high), mean))
    return out


@dataclass
class Aggregate:
    """Each configuration's aggregated rows, and the files written."""

    groups: dict[str, list[RunReport]]
    ids: list[str]  # the fields that tell evaluation rows apart (task, target, query, ...)
    rows: dict[str, list[dict[str, Any]]]
    skipped: list[str]
    files: list[Path]

    def tables(self) -> list[tuple[str, list[str], list[list[str]], int]]:
        """One table per task (evaluator), with only its own columns: (task, header, lines, number of
        columns naming the line), a line per
        configuration and evaluation row, a column per metric ('mean [low, high]'); ``runs`` is a
        column only where configurations have different numbers of runs."""
        runs = {r["runs"] for rows in self.rows.values() for r in rows}
        out = []
        for task in dict.fromkeys(str(r.get("task", "")) for rows in self.rows.values() for r in rows):
            mine = {label: [r for r in rows if str(r.get("task", "")) == task] for label, rows in self.rows.items()}
            ids = [k for k in self.ids if k != "task" and any(k in r for rows in mine.values() for r in rows)]
            metrics = list(dict.fromkeys(r["metric"] for rows in mine.values() for r in rows))
            header = ["configuration", *(["runs"] if len(runs) > 1 else []), *ids, *metrics]
            lines = []
            for label, rows in mine.items():
                by_row: dict[tuple, dict[str, Any]] = {}
                for r in rows:
                    by_row.setdefault(tuple(hashable(r.get(k)) for k in ids), {"runs": r["runs"], "ids": r})[
                        r["metric"]] = r
                for cells in by_row.values():
                    lines.append([label, *([str(cells["runs"])] if len(runs) > 1 else []),
                                  *(cell_text(cells["ids"].get(k)) for k in ids),
                                  *(_cell(cells[m]) if m in cells else "—" for m in metrics)])
            out.append((task, header, lines, len(header) - len(metrics)))
        return out

    def caption(self) -> str:
        """What a cell is, and the number of runs where every configuration has the same."""
        runs = {r["runs"] for rows in self.rows.values() for r in rows}
        each = f"{runs.pop()} run(s) per configuration; " if len(runs) == 1 else ""
        return f"{each}mean over the runs (seeds) [{INTERVAL}]"


INTERVAL = "95% percentile bootstrap interval over the runs"


def _cell(row: dict[str, Any]) -> str:
    text = f"{row['value']:.3f}"
    return text + (f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]" if "ci_low" in row else "")


def aggregate_rows(runs: list[RunReport], ids: list[str], metrics: list[str] | None = None) -> list[dict[str, Any]]:
    """The runs' rows matched by ``ids`` and metric: mean, std and interval over the runs, and the values."""
    values: dict[tuple, list[float]] = {}
    first: dict[tuple, dict[str, Any]] = {}
    for run in runs:
        for r in run.rows:
            if metrics is not None and r.get("metric") not in metrics:
                continue
            key = tuple(hashable(r.get(k)) for k in (*ids, "metric"))
            values.setdefault(key, []).append(float(r["value"]))
            first.setdefault(key, r)
    return [{**{k: first[key][k] for k in (*ids, "metric") if k in first[key]}, **mean_interval(v), "values": v}
            for key, v in values.items()]


def aggregate_markdown(result: Aggregate, figure: str | None) -> str:
    """The aggregate as Markdown: a section per task with only its columns, the figure, then which runs
    each configuration holds."""
    out = ["# Comparison of configurations", "", f"Cells: {result.caption()}; — = no such row."]
    for task, header, lines, _ in result.tables():
        out += ["", f"## {task}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
    if figure:
        out += ["", f"![comparison]({figure})"]
    out += ["", "| configuration | run directories |", "|---|---|"]
    out += [f"| {label} | {', '.join(str(r.run_dir) for r in runs)} |" for label, runs in result.groups.items()]
    return "\n".join(out) + "\n"


def aggregate_csv(rows: dict[str, list[dict[str, Any]]], ids: list[str]) -> str:
    """One CSV line per configuration, evaluation row and metric."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["configuration", *ids, "metric", "mean", "std", "ci_low", "ci_high", "runs", "values"])
    for label, group in rows.items():
        for r in group:
            writer.writerow([label, *(cell_text(r.get(k)) for k in ids), r["metric"], r["value"],
                             r.get("std", ""), r.get("ci_low", ""), r.get("ci_high", ""), r["runs"],
                             " ".join(f"{v:.6g}" for v in r["values"])])
    return buffer.getvalue()


def aggregate_groups(groups: dict[str, list[str | Path]], out_dir: str | Path = ".",
                     metrics: list[str] | None = None) -> Aggregate:
    """Load each group's runs, aggregate their rows per configuration, write ``compare.{md,csv,json,png}``."""
    loaded: dict[str, list[RunReport]] = {}
    skipped: list[str] = []
    for label, run_dirs in groups.items():
        for d in run_dirs:
            try:
                run = load_run(d)
            except PolyalignError as exc:
                skipped.append(str(exc))
                continue
            loaded.setdefault(label, []).append(run)
    if not loaded:
        raise PolyalignError("no run with an evaluation report to compare" + "".join(f"; {s}" for s in skipped))
    ids = identity_fields([r for runs in loaded.values() for run in runs for r in run.rows])
    rows = {label: aggregate_rows(runs, ids, metrics) for label, runs in loaded.items()}
    if not any(rows.values()):
        wanted = f" with metric {', '.join(metrics)}" if metrics else ""
        raise PolyalignError(f"the runs' reports have no rows{wanted} to compare")
    out = out_folder(out_dir)
    result = Aggregate(loaded, ids, rows, skipped, [])
    md, csv_path, js, png = (out / name for name in AGGREGATE_FILES)
    figure = plot_comparison([RunReport(Path(label), label, r) for label, r in rows.items()], png,
                             interval=INTERVAL)
    atomic_write_text(md, aggregate_markdown(result, figure.name if figure else None))
    atomic_write_text(csv_path, aggregate_csv(rows, ids))
    atomic_write_text(js, json.dumps({label: group for label, group in rows.items()}, indent=2) + "\n")
    result.files = [md, csv_path, js] + ([figure] if figure else [])
    return result


def run_dirs_in(path: str | Path) -> list[Path]:
    """``path`` if it is a run directory, else every run directory below it (sorted)."""
    path = Path(path)
    if (path / RECIPE_FILE).is_file():
        return [path]
    if not path.is_dir():
        raise PolyalignError(f"{path} is not a folder")
    found = sorted(p.parent for p in path.rglob(RECIPE_FILE) if (p.parent / REPORT_DIR).is_dir()
                   or (p.parent / CHECKPOINTS_DIR).is_dir())
    if not found:
        raise PolyalignError(f"{path} holds no run directory (a folder with {RECIPE_FILE} and checkpoints)")
    return found
