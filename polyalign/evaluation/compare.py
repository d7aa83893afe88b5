"""Compare runs: their evaluation rows side by side in one table and one figure."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyalign.core.errors import PolyalignError
from polyalign.core.evaluator import read_report
from polyalign.core.report_table import cell_text, hashable, identity_fields, metric_cell
from polyalign.files.atomic import atomic_write_text
from polyalign.files.run_files import CHECKPOINTS_DIR, RECIPE_FILE, REPORT_DIR, REPORT_JSON
from polyalign.files.run_progress import in_use, trained_epochs
from polyalign.files.weights import WEIGHTS
from polyalign.files.yaml_file import YamlError, read_yaml

from .report_plots import (
    METRIC_LABEL,
    common_chance,
    curve_rows,
    heatmap_rows,
    modality_order,
    new_figure,
    query_text,
    save_figure,
    subset_sort_key,
)
from .training_plots import differing_settings

COMPARE_MD = "compare.md"
COMPARE_PNG = "compare.png"
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D"]


@dataclass
class RunReport:
    """One run's evaluation rows and the column name it gets."""

    run_dir: Path
    label: str
    rows: list[dict[str, Any]]


@dataclass
class Comparison:
    """The aligned table (``header``, ``lines`` of cell strings) and the files written."""

    runs: list[RunReport]
    header: list[str]
    lines: list[list[str]]
    markdown: Path
    figure: Path | None
    skipped: list[str]  # why each run left out has no report


def run_label(run_dir: Path) -> str:
    """'<recipe name> (<loss plugins>)' from the run's resolved recipe."""
    path = Path(run_dir) / RECIPE_FILE
    try:
        raw = read_yaml(path)
    except YamlError as exc:
        raise PolyalignError(f"{exc}; is {run_dir} a run directory?") from None
    if not isinstance(raw, dict):
        raise PolyalignError(f"{path}: not a recipe mapping")
    loss = raw.get("loss")
    nodes = loss if isinstance(loss, list) else [loss]
    plugins = "+".join(str(n.get("plugin", "?")) for n in nodes if isinstance(n, dict)) or "?"
    return f"{raw.get('name', Path(run_dir).name)} ({plugins})"


def load_run(run_dir: str | Path) -> RunReport:
    """A run's ``eval/report.json`` rows and its label."""
    run_dir = Path(run_dir)
    report = run_dir / REPORT_DIR / REPORT_JSON
    if not report.is_file():
        raise PolyalignError(unfinished_run(run_dir))
    return RunReport(run_dir, run_label(run_dir), read_report(report))


def unfinished_run(run_dir: Path) -> str:
    """Why a folder without an evaluation report has none, and what to do."""
    if not (run_dir / RECIPE_FILE).is_file():
        return f"{run_dir} is not a run directory (no {RECIPE_FILE})"
    if in_use(run_dir):  # a live process holds it: still going, no report yet
        done, epochs = trained_epochs(run_dir) or (0, 0)
        if epochs and done >= epochs:
            return (f"{run_dir} has finished training ({done}/{epochs} epochs) and is being evaluated: compare it "
                    f"when its evaluation report is written")
        return (f"{run_dir} is still training ({done}/{epochs or '?'} epochs done): compare it when it has finished "
                f"and written its evaluation report")
    if not any((run_dir / CHECKPOINTS_DIR).glob(f"*/{WEIGHTS}")):
        return (f"{run_dir} has no checkpoint and no evaluation: the run was stopped before its first "
                f"checkpoint (`polyalign train --resume {run_dir}` starts it over)")
    return f"{run_dir} has no evaluation report; `polyalign eval {run_dir}` writes it"


def unique_labels(runs: list[RunReport]) -> None:
    """Make column names distinct: runs of one label get the recipe settings that differ between them
    (``seed=1``), or '#1', '#2'... in run order where their recipes are the same."""
    groups: dict[str, list[RunReport]] = {}
    for r in runs:
        groups.setdefault(r.label, []).append(r)
    for label, group in groups.items():
        if len(group) < 2:
            continue
        settings = differing_settings([r.run_dir for r in group])
        for n, (r, differ) in enumerate(zip(group, settings), 1):
            r.label = f"{label} {differ}" if differ else f"{label} #{n}"


def aligned_table(runs: list[RunReport], metrics: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """Rows aligned by (task, target, query, other identity fields, metric): a value column per run."""
    all_rows = [r for run in runs for r in run.rows if metrics is None or r.get("metric") in metrics]
    ids = identity_fields(all_rows)
    order: dict[tuple, list[str]] = {}
    cells: dict[tuple, dict[int, str]] = {}
    for i, run in enumerate(runs):
        for r in run.rows:
            if metrics is not None and r.get("metric") not in metrics:
                continue
            key = tuple(hashable(r.get(k)) for k in ids) + (r.get("metric"),)
            order.setdefault(key, [cell_text(r.get(k)) for k in ids] + [str(r.get("metric", ""))])
            cells.setdefault(key, {})[i] = metric_cell(r)
    header = ids + ["metric"] + [run.label for run in runs]
    lines = [order[k] + [cells[k].get(i, "—") for i in range(len(runs))] for k in order]
    return header, lines


def by_task(header: list[str], lines: list[list[str]], n_ids: int) -> list[tuple[str, list[str], list[list[str]]]]:
    """The aligned table split into one table per task, each without the identity columns (the first
    ``n_ids``) that are empty in all its lines: (task, header, lines)."""
    if "task" not in header[:n_ids]:
        return [("", header, lines)]
    at = header.index("task")
    out = []
    for task in dict.fromkeys(line[at] for line in lines):
        mine = [line for line in lines if line[at] == task]
        keep = [i for i in range(len(header)) if i >= n_ids or (i != at and any(line[i] for line in mine))]
        out.append((task, [header[i] for i in keep], [[line[i] for i in keep] for line in mine]))
    return out


def compare_markdown(runs: list[RunReport], header: list[str], lines: list[list[str]], figure: str | None) -> str:
    """The comparison as Markdown: which run is which column, then a table per task with only its columns."""
    out = ["# Comparison", "", "| column | run directory |", "|---|---|"]
    out += [f"| {run.label} | {run.run_dir} |" for run in runs]
    out += ["", ("Cells: value [bootstrap interval over the test tuples, where the evaluator resampled]; "
                 "— = no such row.")]
    for task, part_header, part_lines in by_task(header, lines, len(header) - len(runs)):
        out += ["", f"## {task}", ""] if task else [""]
        out += ["| " + " | ".join(part_header) + " |", "|" + "---|" * len(part_header)]
        out += ["| " + " | ".join(line) + " |" for line in part_lines]
    if figure:
        out += ["", f"![comparison]({figure})"]
    return "\n".join(out) + "\n"


def _collect(runs: list[RunReport]) -> tuple[list[tuple], dict[tuple, dict[int, dict]], dict[str, dict[int, list]]]:
    """Bar keys (task, target, query) in display order, bar rows per key and run, curve rows per
    panel and run."""
    all_rows = [r for run in runs for r in run.rows]
    order = modality_order(all_rows)
    one_task = len({task for task, _ in curve_rows(all_rows)}) == 1
    bars: dict[tuple, dict[int, dict[str, Any]]] = {}
    curves: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for i, run in enumerate(runs):
        for task, rows in heatmap_rows(run.rows).items():
            for r in rows:
                bars.setdefault((task, r["target"], tuple(r["query"])), {})[i] = r
        for (task, target), rows in curve_rows(run.rows).items():
            curves.setdefault(target if one_task else f"{target} ({task})", {})[i] = rows
    keys = sorted(bars, key=lambda k: (k[0], order.index(k[1]) if k[1] in order else len(order),
                                      subset_sort_key(k[2], order)))
    return keys, bars, curves


def _bar_panel(ax: Any, runs: list[RunReport], keys: list[tuple], bars: dict[tuple, dict[int, dict]],
               interval: str = "bootstrap interval") -> None:
    width = 0.8 / len(runs)
    intervals = False  # the title mentions error bars only when some are drawn
    for i, run in enumerate(runs):
        xs, ys, lo, hi = [], [], [], []
        for j, key in enumerate(keys):
            r = bars[key].get(i)
            if r is None:
                continue
            v = float(r["value"])
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(v)
            lo.append(v - float(r.get("ci_low", v)))
            hi.append(float(r.get("ci_high", v)) - v)
        drawn = any(lo) or any(hi)
        intervals = intervals or drawn
        ax.bar(xs, ys, width=width, color=COLORS[i % len(COLORS)], label=run.label,
               yerr=[lo, hi] if drawn else None, capsize=2, error_kw={"linewidth": 0.8})
    multi_task = len({k[0] for k in keys}) > 1
    tilt = len(keys) > 6
    ax.set_xticks(range(len(keys)), labels=[(f"{k[0]}: " if multi_task else "") + f"{k[1]} ← {query_text(k[2])}"
                                            for k in keys],
                  rotation=30 if tilt else 0, ha="right" if tilt else "center", fontsize=8)
    chance = common_chance([r for d in bars.values() for r in d.values()])
    if chance is not None:
        ax.axhline(chance, color="gray", linestyle=":", linewidth=1.2, label=f"chance ({chance:.3f})")
    top = max([float(r.get("ci_high", r["value"])) for d in bars.values() for r in d.values()] + [chance or 0.0])
    ax.set_ylim(0, min(1.05, 1.15 * top + 0.02))  # accuracies in [0, 1]; near 0 the axis zooms in to read them
    ax.set_xlabel("target ← query modalities")
    ax.set_ylabel(METRIC_LABEL)
    ax.set_title("Zero-shot accuracy from each query subset"
                 + (f"\nerror bars: {interval}" if intervals else ""), fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _curve_panel(ax: Any, runs: list[RunReport], target: str, per_run: dict[int, list[dict[str, Any]]]) -> None:
    from matplotlib.lines import Line2D

    dropped_names: list[str] = []
    shaded = False
    for i, rows in per_run.items():
        lines: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            lines.setdefault(str(r.get("dropped", "")), []).append(r)
        for name, line in lines.items():
            if name not in dropped_names:
                dropped_names.append(name)
            k = dropped_names.index(name)
            line.sort(key=lambda r: float(r["rate"]))
            x = [float(r["rate"]) for r in line]
            color = COLORS[i % len(COLORS)]
            ax.plot(x, [float(r["value"]) for r in line], color=color, linestyle=LINESTYLES[k % len(LINESTYLES)],
                    marker=MARKERS[k % len(MARKERS)], markersize=4)
            if all("ci_low" in r for r in line):
                shaded = True
                ax.fill_between(x, [r["ci_low"] for r in line], [r["ci_high"] for r in line],
                                color=color, alpha=0.10, linewidth=0)
    ax.set_xticks(sorted({float(r["rate"]) for rows in per_run.values() for r in rows}))
    shading = "\nshaded: bootstrap interval" if shaded else ""
    ax.set_title(f"target {target}: accuracy vs test-time dropout{shading}", fontsize=9)
    ax.set_xlabel("test-time dropout rate")
    ax.set_ylabel(METRIC_LABEL)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    # colours are the runs (the figure's legend); the panel's legend names the line styles only
    ax.legend(handles=[Line2D([], [], color="gray", linestyle=LINESTYLES[k % len(LINESTYLES)],
                              marker=MARKERS[k % len(MARKERS)], markersize=4, label=f"drop {name}")
                       for k, name in enumerate(dropped_names)], fontsize=7, loc="best")


def plot_comparison(runs: list[RunReport], path: Path, interval: str = "bootstrap interval") -> Path | None:
    """Grouped bars of accuracy per (target, query subset), and accuracy-vs-dropout curves per
    target, one colour per run (line style and marker: the dropped modality); ``interval`` names
    what the error bars are."""
    from matplotlib.patches import Patch

    keys, bars, curves = _collect(runs)
    if not keys and not curves:
        return None
    ncols = max(1, min(3, len(curves)))
    crow = math.ceil(len(curves) / ncols)
    parts = ([("bars", 3.6)] if keys else []) + ([("curves", 3.4 * crow)] if curves else [])
    width = max(7.0, 0.3 * len(keys) * len(runs) + 2.5, 4.0 * ncols + 1.0)
    fig = new_figure(width, sum(h for _, h in parts) + 0.8)
    subfigs = fig.subfigures(len(parts), 1, height_ratios=[h for _, h in parts], squeeze=False)[:, 0]
    for sub, (kind, _) in zip(subfigs, parts):
        if kind == "bars":
            _bar_panel(sub.subplots(), runs, keys, bars, interval)
            continue
        axes = sub.subplots(crow, ncols, squeeze=False).ravel()
        for ax, (target, per_run) in zip(axes, curves.items()):
            _curve_panel(ax, runs, target, per_run)
        for ax in axes[len(curves):]:
            ax.set_visible(False)
        if not keys:  # no bar panel carries the runs' colours
            sub.legend(handles=[Patch(color=COLORS[i % len(COLORS)], label=run.label) for i, run in enumerate(runs)],
                       fontsize=8, loc="outside right upper")
    fig.suptitle(figure_title(runs), fontsize=11)
    return save_figure(fig, path)


def figure_title(runs: list[RunReport]) -> str:
    """'A vs B' for two short labels, else 'Comparison of N runs' (the legend names each)."""
    if len(runs) == 2 and sum(len(r.label) for r in runs) <= 60:
        return f"{runs[0].label} vs {runs[1].label}"
    return f"Comparison of {len(runs)} runs or configurations (colours: legend)"


def out_folder(out_dir: str | Path) -> Path:
    """The ``--out`` folder of a comparison, created if needed."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PolyalignError(f"--out {out}: cannot create the folder ({exc.strerror or exc})") from None
    return out


def compare_runs(run_dirs: list[str | Path], out_dir: str | Path = ".",
                 metrics: list[str] | None = None) -> Comparison:
    """Load each run's report, align the rows, write ``compare.md`` and ``compare.png`` to ``out_dir``."""
    runs, skipped = [], []
    for d in run_dirs:
        try:
            runs.append(load_run(d))
        except PolyalignError as exc:
            skipped.append(str(exc))
    if len(runs) < 2:
        raise PolyalignError(f"compare needs at least two runs with an evaluation report, got {len(runs)}"
                             + "".join(f"; {reason}" for reason in skipped))
    unique_labels(runs)
    header, lines = aligned_table(runs, metrics)
    if not lines:
        wanted = f" with metric {', '.join(metrics)}" if metrics else ""
        raise PolyalignError(f"the runs' reports have no rows{wanted} to compare")
    out = out_folder(out_dir)
    figure = plot_comparison(runs, out / COMPARE_PNG)
    markdown = out / COMPARE_MD
    atomic_write_text(markdown, compare_markdown(runs, header, lines, figure.name if figure else None))
    return Comparison(runs, header, lines, markdown, figure, skipped)
