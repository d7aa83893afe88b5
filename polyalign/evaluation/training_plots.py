"""``polyalign plot``: loss, temperature, learning rate and evaluation of one or more runs, as a PNG."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from polyalign.core.errors import PolyalignError, shown
from polyalign.core.evaluator import read_report
from polyalign.core.report_table import LEAD_KEYS, cell_text, identity_fields
from polyalign.files.atomic import atomic_write_bytes
from polyalign.files.json_file import parse_json
from polyalign.files.run_files import METRICS_FILE, RECIPE_FILE, REPORT_DIR, REPORT_JSON, log_lines
from polyalign.files.yaml_file import YamlError, read_yaml

CSV_FILE = "metrics.csv"
MAX_EVAL_GROUPS = 12
MAX_NAMED_SETTINGS = 3  # differing recipe settings named in a run's legend entry


@dataclass
class RunCurves:
    """What one run logged: step rows, epoch rows and the evaluation report."""

    name: str
    steps: list[dict[str, Any]]
    epochs: list[dict[str, Any]]
    eval_rows: list[dict[str, Any]] = field(default_factory=list)

    def epoch_of(self, steps: np.ndarray) -> np.ndarray:
        """Fractional epochs for optimizer steps (from the step at which each epoch ended)."""
        ends = [(int(r["epoch"]), int(r["step"])) for r in self.epochs]
        if not ends:  # interrupted in its first epoch: the steps so far are a lower bound on its length
            per = max((int(r["step"]) for r in self.steps), default=1)
            return steps / max(per, 1)
        xp = np.array([0] + [s for _, s in ends], dtype=float)
        fp = np.array([0] + [e for e, _ in ends], dtype=float)
        last_len = max(xp[-1] - xp[-2], 1.0)
        inside = np.interp(steps, xp, fp)
        return np.where(steps > xp[-1], fp[-1] + (steps - xp[-1]) / last_len, inside)

    def series(self, key: str, kind: str = "step") -> tuple[np.ndarray, np.ndarray]:
        """(epochs, values) of a logged metric (empty arrays if it was never logged)."""
        rows = [r for r in (self.steps if kind == "step" else self.epochs) if _number(r.get(key)) is not None]
        if kind == "epoch":
            return (np.array([float(r["epoch"]) for r in rows]), np.array([_number(r[key]) for r in rows]))
        steps = np.array([float(r["step"]) for r in rows])
        return self.epoch_of(steps), np.array([_number(r[key]) for r in rows])


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _logged_rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) of every row of ``metrics.jsonl`` or ``metrics.csv``."""
    if path.suffix == ".csv":
        reader = csv.DictReader(line for _, line in log_lines(path))
        try:
            return [(reader.line_num, row) for row in reader]
        except csv.Error as exc:
            raise PolyalignError(f"{path}, line {reader.line_num + 1}: not a CSV row ({exc})") from None
    rows = []
    for n, line in log_lines(path):
        if not line.strip():
            continue
        row = parse_json(line, f"{path}, line {n}")
        if not isinstance(row, dict):
            raise PolyalignError(f"{path}, line {n}: expected a JSON object (one logged row), "
                                 f"got {type(row).__name__}")
        rows.append((n, row))
    return rows


def _count(value: Any) -> int:
    """A step or epoch number: a whole number >= 0 (as JSON or CSV text)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit():
        raise ValueError(value)
    return int(value)


def read_run(run_dir: str | Path) -> RunCurves:
    """The logged metrics of a run (``metrics.jsonl``, else ``metrics.csv``) and its eval report."""
    run_dir = Path(run_dir)
    path = run_dir / METRICS_FILE if (run_dir / METRICS_FILE).is_file() else run_dir / CSV_FILE
    if not path.is_file():
        raise PolyalignError(f"{run_dir} has no {METRICS_FILE} or {CSV_FILE}; plot needs a run trained with "
                             f"the jsonl or csv logger (the recipe's `logging:` list)")
    curves: dict[str, list[dict[str, Any]]] = {"step": [], "epoch": []}
    for n, row in _logged_rows(path):
        if row.get("kind") not in curves:
            continue
        try:
            curves[row["kind"]].append({**row, "step": _count(row.get("step")), "epoch": _count(row.get("epoch"))})
        except ValueError:
            raise PolyalignError(f"{path}, line {n}: a {row['kind']} row needs whole numbers step and epoch, got "
                                 f"step {shown(row.get('step'))}, epoch {shown(row.get('epoch'))}") from None
    eval_rows = read_report(run_dir / REPORT_DIR / REPORT_JSON, missing_ok=True)
    return RunCurves(run_dir.name, curves["step"], curves["epoch"], eval_rows)


def _eval_label(row: dict[str, Any], with_task: bool, extra: list[str]) -> str:
    """'target from query · metric', with the task when there are several and the other fields that tell
    rows apart (``extra``: a dropout curve's dropped modality and rate, a probe's shots)."""
    query = "+".join(row.get("query") or [])
    task = f"{row.get('task')}: " if with_task else ""
    more = "".join(f", {k} {cell_text(row[k])}" for k in extra if k in row)
    return f"{task}{row.get('target')} from {query}{more} · {row.get('metric')}"


def differing_settings(run_dirs: list[Path]) -> list[str]:
    """Per run, the settings of its recipe that differ between the runs (``seed=1, train.lr=0.01``; at
    most ``MAX_NAMED_SETTINGS``, then '…'); empty strings where the recipes are the same."""
    flat = []
    for d in run_dirs:
        try:
            flat.append(flat_settings(read_yaml(Path(d) / RECIPE_FILE)))
        except YamlError:
            flat.append({})
    keys = [k for k in dict.fromkeys(k for f in flat for k in f) if len({str(f.get(k)) for f in flat}) > 1]
    more = "…" if len(keys) > MAX_NAMED_SETTINGS else ""
    return [", ".join(f"{k}={f.get(k, '—')}" for k in keys[:MAX_NAMED_SETTINGS]) + more for f in flat]


def run_names(run_dirs: list[Path]) -> list[str]:
    """Legend names of runs: the settings of their recipes that differ, then the folder
    (``seed=1, train.lr=0.01 (demo-20261208-0311)``); the folder alone where the recipes are the same."""
    return [f"{settings} ({Path(d).name})" if settings else Path(d).name
            for d, settings in zip(run_dirs, differing_settings(run_dirs))]


def flat_settings(node: Any, prefix: str = "") -> dict[str, Any]:
    """A recipe as dotted keys (``train.lr``) to their values; lists are one value."""
    if not isinstance(node, dict):
        return {prefix: node}
    out: dict[str, Any] = {}
    for k, v in node.items():
        out.update(flat_settings(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _plot_eval(ax: Any, runs: list[RunCurves], colors: list[Any]) -> None:
    """Horizontal bars, one per (run, evaluator row); only the first metric when there are many rows."""
    rows = [(i, row, _number(row.get("value"))) for i, run in enumerate(runs) for row in run.eval_rows]
    rows = [(i, row, v) for i, row, v in rows if v is not None]
    title = "Evaluation (test split)"
    if not rows:
        ax.set_title(title)
        ax.text(0.5, 0.5, "no evaluation report", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    with_task = len({row.get("task") for _, row, _ in rows}) > 1
    extra = [k for k in identity_fields([row for _, row, _ in rows]) if k not in LEAD_KEYS]
    labels = list(dict.fromkeys(_eval_label(row, with_task, extra) for _, row, _ in rows))
    if len(labels) > MAX_EVAL_GROUPS:
        metric = rows[0][1].get("metric")
        rows = [r for r in rows if r[1].get("metric") == metric]
        labels = list(dict.fromkeys(_eval_label(row, with_task, extra) for _, row, _ in rows))
        title = f"Evaluation (test split): {metric} only"
    if len(labels) > MAX_EVAL_GROUPS:
        title += f"\nthe first {MAX_EVAL_GROUPS} of {len(labels)} rows (all: eval/report.md)"
        labels = labels[:MAX_EVAL_GROUPS]
    ax.set_title(title, fontsize=10)
    values = {(i, _eval_label(row, with_task, extra)): v for i, row, v in rows}
    height = 0.8 / len(runs)
    y = np.arange(len(labels))
    for i, run in enumerate(runs):
        widths = [values.get((i, label), np.nan) for label in labels]
        bars = ax.barh(y + (i - (len(runs) - 1) / 2) * height, widths, height, color=colors[i], label=run.name)
        ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("value (fraction of queries; 1 = perfect)")
    ax.set_xlim(0, 1.1)
    ax.grid(axis="x", alpha=0.3)


def _plot_lines(ax: Any, runs: list[RunCurves], colors: list[Any], key: str, title: str,
                ylabel: str, log: bool = False) -> None:
    drawn = False
    for run, color in zip(runs, colors):
        x, y = run.series(key)
        if len(x):
            ax.plot(x, y, color=color, lw=1.5)
            drawn = True
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if not drawn:
        ax.text(0.5, 0.5, f"no {key} logged", ha="center", va="center", transform=ax.transAxes)
    elif log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)


def training_figure(runs: list[RunCurves]) -> Any:
    """A matplotlib figure of the runs' curves overlaid (one colour per run), 2 x 2 panels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    colors = [f"C{i % 10}" for i in range(len(runs))]
    fig = Figure(figsize=(12, 8.5), layout="constrained")
    FigureCanvasAgg(fig)
    (ax_loss, ax_tau), (ax_lr, ax_eval) = fig.subplots(2, 2)

    for run, color in zip(runs, colors):
        x, y = run.series("loss")
        ax_loss.plot(x, y, color=color, lw=0.8, alpha=0.35)
        for key, style, marker in (("train_loss", "-", "o"), ("val_loss", "--", "s")):
            ex, ey = run.series(key, kind="epoch")
            ax_loss.plot(ex, ey, color=color, ls=style, marker=marker, ms=4, lw=1.8)
    ax_loss.set_title("Loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss (nats)")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(handles=[Line2D([], [], color="grey", lw=0.8, alpha=0.5, label="train, per logged step"),
                            Line2D([], [], color="grey", marker="o", ms=4, label="train, epoch mean"),
                            Line2D([], [], color="grey", ls="--", marker="s", ms=4, label="validation, end of epoch")],
                   fontsize=8, loc="upper right")

    _plot_lines(ax_tau, runs, colors, "temperature", "Temperature τ (learned)", "τ (dimensionless)")
    _plot_lines(ax_lr, runs, colors, "lr", "Learning rate (schedule)", "learning rate")
    _plot_eval(ax_eval, runs, colors)

    fig.legend(handles=[Line2D([], [], color=c, lw=3, label=run.name) for run, c in zip(runs, colors)],
               loc="outside lower center", fontsize=9, title="run",
               ncols=1 if max(len(run.name) for run in runs) > 40 else min(len(runs), 3))
    fig.suptitle("Training curves" if len(runs) == 1 else f"Training curves of {len(runs)} runs", fontsize=13)
    return fig


def plot_runs(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Draw the training curves of ``run_dirs`` overlaid into the PNG ``out``."""
    if not run_dirs:
        raise PolyalignError("give at least one run directory to plot")
    runs = [read_run(d) for d in run_dirs]
    for run, name in zip(runs, run_names([Path(d) for d in run_dirs])):
        run.name = name
    fig = training_figure(runs)
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise PolyalignError(f"--out {out}: the plot is a PNG; give a file name ending in .png")
    out.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()  # rendered in memory, then written by rename: never a half-written PNG
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(out, buf.getvalue())
    return out
