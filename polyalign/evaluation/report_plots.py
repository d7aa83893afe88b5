"""Report figures (matplotlib, no GUI backend): an accuracy heatmap of query subset x target,
accuracy against test-time dropout rate with bootstrap bands, and the confusion matrices of
zero-shot classification."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Iterable

from polyalign.files.atomic import atomic_write_bytes

HEATMAP_FILE = "heatmap.png"
CURVE_FILE = "dropout_curve.png"
CONFUSION_FILE = "confusion.png"
METRIC = "accuracy"
METRIC_LABEL = "top-1 accuracy"


def new_figure(width: float, height: float) -> Any:
    """A matplotlib Figure that renders without pyplot (so no GUI backend is touched)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def save_figure(fig: Any, path: Path) -> Path:
    """Write ``fig`` as PNG to ``path`` atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def query_text(query: Any) -> str:
    """'a+c' for a list of modalities."""
    return "+".join(query) if isinstance(query, (list, tuple)) else str(query)


def modality_order(rows: Iterable[dict[str, Any]]) -> list[str]:
    """Modalities in the order they first appear as targets, then as query members."""
    rows = list(rows)
    order: list[str] = []
    for r in rows:
        if r.get("target") is not None and r["target"] not in order:
            order.append(r["target"])
    for r in rows:
        for m in r.get("query") or []:
            if m not in order:
                order.append(m)
    return order


def subset_sort_key(query: Any, order: list[str]) -> tuple:
    """Smaller subsets first, then by modality order."""
    members = list(query) if isinstance(query, (list, tuple)) else [query]
    return (len(members), [order.index(m) if m in order else len(order) for m in members])


SUBDIVIDING_KEYS = ("rate", "class", "shots")  # rows that split a (query, target) cell further


def heatmap_rows(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Accuracy rows of whole (query, target) cells (no dropout rate, single class or probe), by task."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if (r.get("metric") == METRIC and "target" in r and "query" in r
                and not any(k in r for k in SUBDIVIDING_KEYS)):
            out.setdefault(str(r.get("task", "")), []).append(r)
    return out


def curve_rows(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Accuracy rows with a dropout rate, grouped by (task, target)."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("metric") == METRIC and "rate" in r:
            out.setdefault((str(r.get("task", "")), str(r.get("target", ""))), []).append(r)
    return out


def common_chance(rows: list[dict[str, Any]]) -> float | None:
    """The ``chance`` value shared by every row, if they all carry the same one."""
    values = {round(float(r["chance"]), 6) for r in rows if "chance" in r}
    return values.pop() if len(values) == 1 and all("chance" in r for r in rows) else None


def plot_heatmap(rows: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Heatmap PNG of accuracy, query subsets (y) x targets (x), one panel per task."""
    import numpy as np

    tasks = heatmap_rows(rows)
    if not tasks:
        return None
    panels = []
    for task, task_rows in tasks.items():
        order = modality_order(task_rows)
        targets = [m for m in order if any(r["target"] == m for r in task_rows)]
        queries: list[tuple] = []
        for r in task_rows:
            q = tuple(r["query"])
            if q not in queries:
                queries.append(q)
        queries.sort(key=lambda q: subset_sort_key(q, order))
        grid = np.full((len(queries), len(targets)), np.nan)
        for r in task_rows:
            grid[queries.index(tuple(r["query"])), targets.index(r["target"])] = float(r["value"])
        panels.append((task, targets, queries, grid, common_chance(task_rows)))
    width = sum(1.6 + 1.0 * len(p[1]) for p in panels) + 1.6
    height = 1.9 + 0.42 * max(len(p[2]) for p in panels)
    fig = new_figure(max(width, 4.8), max(height, 3.0))
    axes = fig.subplots(1, len(panels), squeeze=False, width_ratios=[len(p[1]) + 0.8 for p in panels])[0]
    image = None
    for ax, (task, targets, queries, grid, chance) in zip(axes, panels):
        masked = np.ma.masked_invalid(grid)
        image = ax.imshow(masked, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_facecolor("#dddddd")
        ax.set_xticks(range(len(targets)), labels=targets)
        ax.set_yticks(range(len(queries)), labels=[query_text(q) for q in queries])
        ax.set_xlabel("target modality (predicted)")
        ax.set_ylabel("query modalities (given)")
        sub = task + (f"\nchance = {chance:.3f}" if chance is not None else "")
        ax.set_title(sub, fontsize=10)
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                v = grid[i, j]
                if math.isnan(v):
                    ax.text(j, i, "–", ha="center", va="center", color="#777777", fontsize=9)
                else:
                    ax.text(j, i, f"{v:.3f}", ha="center", va="center", fontsize=9,
                            color="black" if v > 0.6 else "white")
    fig.colorbar(image, ax=list(axes), label=METRIC_LABEL, shrink=0.9)
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)


def plot_confusion(rows: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Confusion-matrix PNG (true class x predicted class, counts) of each row carrying ``confusion`` and
    ``classes`` (zero-shot classification's top-1 rows), one panel per query."""
    import numpy as np

    found = [r for r in rows if isinstance(r.get("confusion"), list) and isinstance(r.get("classes"), list)]
    if not found:
        return None
    k = max(len(r["classes"]) for r in found)
    side = 1.6 + 0.42 * k
    fig = new_figure(max(4.0, (side + 0.4) * len(found) + 0.6), side + 1.8)
    axes = fig.subplots(1, len(found), squeeze=False)[0]
    for ax, r in zip(axes, found):
        counts = np.asarray(r["confusion"], dtype=float)
        share = counts / np.maximum(counts.sum(1, keepdims=True), 1)  # colour: share of the true class
        ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        names = [str(c) for c in r["classes"]]
        ax.set_xticks(range(len(names)), labels=names, rotation=45 if max(map(len, names)) > 3 else 0, ha="right"
                      if max(map(len, names)) > 3 else "center")
        ax.set_yticks(range(len(names)), labels=names)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"from {query_text(r.get('query', []))}\n"
                     f"accuracy {float(r['value']):.3f}, n = {int(counts.sum())}", fontsize=9)
        if k <= 20:
            for i in range(counts.shape[0]):
                for j in range(counts.shape[1]):
                    if counts[i, j]:
                        ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                                color="white" if share[i, j] > 0.5 else "black")
    fig.suptitle(title + "\n(counts; colour: share of the true class)", fontsize=11)
    return save_figure(fig, path)


def line_label(row: dict[str, Any]) -> str:
    """Legend text for a dropout line: 'drop a', 'drop all'."""
    dropped = row.get("dropped")
    return f"drop {dropped}" if dropped is not None else "dropout"


def plot_curves(rows: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Accuracy against test-time dropout rate, one panel per target, one line per dropped
    modality, shaded bootstrap interval and a dashed chance line."""
    groups = curve_rows(rows)
    if not groups:
        return None
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    fig = new_figure(1.0 + 4.0 * ncols, 0.9 + 3.3 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    for ax, ((task, target), group) in zip(axes, groups.items()):
        lines: dict[str, list[dict[str, Any]]] = {}
        for r in group:
            lines.setdefault(line_label(r), []).append(r)
        for k, (label, line) in enumerate(lines.items()):
            line.sort(key=lambda r: float(r["rate"]))
            x = [float(r["rate"]) for r in line]
            y = [float(r["value"]) for r in line]
            color = colors[k % len(colors)]
            # distinct markers, shrinking, so lines that coincide stay visible
            ax.plot(x, y, marker="osD^vP"[k % 6], markersize=max(3, 8 - 1.5 * k), color=color, label=label,
                    linestyle="--" if label == "drop all" else "-")
            if all("ci_low" in r for r in line):
                ax.fill_between(x, [r["ci_low"] for r in line], [r["ci_high"] for r in line],
                                color=color, alpha=0.15, linewidth=0)
        chance = common_chance(group)
        if chance is not None:
            ax.axhline(chance, color="gray", linestyle=":", linewidth=1.2, label=f"chance ({chance:.3f})")
        query = query_text(group[0].get("query", ""))
        ax.set_title(f"target {target} from {query}" + (f" ({task})" if len(groups) > 1 and
                                                        len({t for t, _ in groups}) > 1 else ""), fontsize=10)
        ax.set_xlabel("test-time dropout rate")
        ax.set_ylabel(METRIC_LABEL)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xticks(sorted({float(r["rate"]) for r in group}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    fig.suptitle(title + "\n(shaded: bootstrap interval)", fontsize=11)
    return save_figure(fig, path)


def write_plots(out_dir: Path, rows: list[dict[str, Any]], name: str) -> list[Path]:
    """Write the heatmap, dropout-curve and confusion-matrix PNGs that ``rows`` have data for (removing a
    stale one that no longer has data); return the paths written."""
    out_dir = Path(out_dir)
    plots = [(plot_heatmap, out_dir / HEATMAP_FILE, f"Zero-shot accuracy by query subset: {name}"),
             (plot_curves, out_dir / CURVE_FILE, f"Accuracy under test-time modality dropout: {name}"),
             (plot_confusion, out_dir / CONFUSION_FILE, f"Zero-shot classification: {name}")]
    written = []
    for plot, path, title in plots:
        if plot(rows, path, title) is not None:
            written.append(path)
        else:
            path.unlink(missing_ok=True)
    return written
