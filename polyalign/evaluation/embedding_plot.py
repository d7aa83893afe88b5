"""The learned space in two dimensions: a run's embeddings of every modality of one split, L2-normalised,
projected together by t-SNE (scikit-learn; PCA, said so, when scikit-learn is absent) and drawn twice,
coloured by modality and by label (``polyalign plot RUN --embeddings``)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from polyalign.core.errors import Notice, PolyalignError
from polyalign.core.evaluator import EvalContext
from polyalign.core.plugin_manager import Plugins, default_plugins

from .evaluate import load_trained
from .report_plots import new_figure, save_figure

EMBEDDINGS_FILE = "embeddings.png"
MARKERS = "o^sDvP*Xh<>p"


def project_2d(points: Any, seed: int) -> tuple[Any, str]:
    """``(N, 2)`` coordinates of ``(N, E)`` points and the method's name: t-SNE, or PCA (with a
    :class:`Notice`) when scikit-learn is not installed."""
    import numpy as np

    try:
        from sklearn.manifold import TSNE
    except ImportError:
        warnings.warn(Notice("the embeddings plot uses PCA: t-SNE needs scikit-learn (pip install "
                             "'polyalign[probe]')"), stacklevel=2)
        centred = points - points.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        return centred @ vt[:2].T, "PCA"
    perplexity = float(min(30.0, max(2.0, (len(points) - 1) / 3)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(points), "t-SNE"


def label_text(label: Any, names: list[str] | None) -> str:
    """A label as shown in the legend: its class name when the dataset names integer labels."""
    if names and isinstance(label, int) and 0 <= label < len(names):
        return str(names[label])
    return "no label" if label is None else str(label)


def plot_embeddings(run_dir: str | Path, out: str | Path | None = None, checkpoint: str = "last",
                    split: str = "test", max_rows: int = 1500, plugins: Plugins | None = None) -> Path:
    """Draw ``split``'s embeddings of every modality of a finished run in 2-D (at most ``max_rows``
    rows of the split, a seeded sample) to ``out`` (default ``RUN/embeddings.png``); return the path."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    run_dir = Path(run_dir)
    recipe, parts, device = load_trained(run_dir, checkpoint, plugins or default_plugins(), split)
    ctx = EvalContext(parts, split, device, recipe.train.batch_size, recipe.seed)
    emb, present = ctx.embeddings()
    samples = ctx.samples
    rows = torch.arange(len(samples))
    if len(rows) > max_rows:
        rows = torch.randperm(len(rows), generator=torch.Generator().manual_seed(recipe.seed))[:max_rows].sort().values
    points, modality, labels = [], [], []
    for i, m in enumerate(ctx.modalities):
        have = rows[present[m][rows]]
        points.append(F.normalize(emb[m][have].double(), dim=-1).numpy())
        modality += [i] * len(have)
        labels += [samples[j].get("label") for j in have.tolist()]
    xy = np.concatenate(points)
    if len(xy) < 4:
        raise PolyalignError(f"{run_dir}: the {split!r} split has {len(xy)} embeddings; the plot needs 4 or more")
    xy, method = project_2d(xy, recipe.seed)
    modality_of = np.array(modality)
    names = getattr(parts.dataset, "label_names", None)
    shown = [label_text(v, names) for v in labels]
    classes = sorted(set(shown), key=lambda s: (s == "no label", len(s), s))

    fig = new_figure(13.0, 6.2)
    by_modality, by_label = fig.subplots(1, 2)
    for i, m in enumerate(ctx.modalities):
        at = modality_of == i
        by_modality.scatter(xy[at, 0], xy[at, 1], s=9, alpha=0.7, color=f"C{i % 10}", label=f"{m} ({at.sum()})",
                            marker=MARKERS[i % len(MARKERS)], linewidths=0)
    by_modality.legend(title="modality", fontsize=8, markerscale=1.6, loc="best")
    by_modality.set_title("coloured by modality")
    import matplotlib

    palette = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20 else "viridis"]
    colour = {c: palette(k if len(classes) <= 20 else k / max(len(classes) - 1, 1)) for k, c in enumerate(classes)}
    for i, m in enumerate(ctx.modalities):  # marker: modality, colour: label
        at = np.flatnonzero(modality_of == i)
        by_label.scatter(xy[at, 0], xy[at, 1], s=9, alpha=0.7, color=[colour[shown[j]] for j in at],
                         marker=MARKERS[i % len(MARKERS)], linewidths=0)
    if len(classes) <= 20:
        handles = [matplotlib.lines.Line2D([], [], ls="", marker="o", color=colour[c], label=c) for c in classes]
        by_label.legend(handles=handles, title="label", fontsize=8, loc="best")
    by_label.set_title("coloured by label (marker: modality)")
    for ax in (by_modality, by_label):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{method} of the L2-normalised {split} embeddings: {run_dir.name}\n"
                 f"{len(xy)} embeddings of {len(rows)} rows; a cluster per modality is a modality gap", fontsize=11)
    return save_figure(fig, Path(out) if out else run_dir / EMBEDDINGS_FILE)
