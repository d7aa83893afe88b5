"""Evaluation: embed a split once, score with the loss's own rule, write the report."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .assemble import Assembled
from .checkpoint import atomic_write_text
from .errors import PluginError
from .data import EpochSampler, Sample, make_loader, skip_summary
from .plugins import Plugins
from .recipe import Recipe

REPORT_DIR = "eval"


@dataclass
class EvalContext:
    """What an evaluator gets: the trained parts, one split, and cached embeddings."""

    parts: Assembled
    split: str
    device: torch.device
    batch_size: int = 256
    seed: int = 0
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def samples(self) -> Sequence[Sample]:
        return self.parts.dataset.split(self.split)

    @property
    def modalities(self) -> list[str]:
        return self.parts.model.modalities

    def embeddings(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(embeddings, present)`` for every sample of the split (CPU, float32), computed once."""
        if "emb" not in self._cache:
            self._cache["emb"] = embed_split(self.parts, self.split, self.device, self.batch_size)
        return self._cache["emb"]

    @torch.no_grad()
    def score(self, queries: dict[str, torch.Tensor], candidates: torch.Tensor, target: str) -> torch.Tensor:
        """The loss's scoring rule, checked for shape."""
        out = self.parts.loss.score(queries, candidates, target)
        n_q = next(iter(queries.values())).shape[0]
        name = self.parts.loss_name or type(self.parts.loss).__name__
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (n_q, candidates.shape[0]):
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise PluginError(f"loss plugin {name!r}: score() returned {got}; "
                              f"expected ({n_q}, {candidates.shape[0]}) (queries x candidates)")
        if torch.isnan(out).any():
            raise PluginError(f"loss plugin {name!r}: score() returned NaN scores for target {target!r} "
                              f"(ranks computed from them would be meaningless)")
        return out


@torch.no_grad()
def embed_split(parts: Assembled, split: str, device: torch.device,
                batch_size: int = 256) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Embed every sample of ``split``: ``(embeddings[m] (N, E), present[m] (N,))`` on CPU."""
    data = parts.tuples(split)
    loader = make_loader(data, parts.collator(), batch_size, EpochSampler(len(data), 0, shuffle=False))
    model = parts.model
    was_training = model.training
    model.eval()
    embs: dict[str, list[torch.Tensor]] = {m: [] for m in model.modalities}
    pres: dict[str, list[torch.Tensor]] = {m: [] for m in model.modalities}
    for batch in loader:
        batch = batch.to(device)
        out = model(batch.inputs, batch.present)
        for m in model.modalities:
            embs[m].append(out[m].float().cpu())
            pres[m].append(batch.present[m].cpu())
    model.train(was_training)
    skipped = data.take_skipped()  # data.on_error=skip: those rows count as absent
    if skipped:
        warnings.warn(skip_summary(split, skipped), stacklevel=2)
    return ({m: torch.cat(v) for m, v in embs.items()}, {m: torch.cat(v) for m, v in pres.items()})


def ranks_of_correct(scores: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """1-based rank of the best-scored correct candidate per query (ties count against it)."""
    neg_inf = torch.finfo(scores.dtype).min
    best = torch.where(correct, scores, torch.full_like(scores, neg_inf)).max(dim=1, keepdim=True).values
    rivals = (~correct) & (scores >= best)
    return rivals.sum(dim=1) + 1


def per_query_metrics(ranks: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, torch.Tensor]:
    """Per-query hits at each k (``accuracy`` for k = 1, ``top5``...) and reciprocal rank (``mrr``), float64."""
    ranks = ranks.double()
    out = {("accuracy" if k == 1 else f"top{k}"): (ranks <= k).double() for k in ks}
    out["mrr"] = 1.0 / ranks
    return out


def retrieval_metrics(ranks: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy (``accuracy`` for k = 1, ``top5``...) and MRR from ranks."""
    return {name: float(v.mean()) for name, v in per_query_metrics(ranks, ks).items()}


def value_key(value: Any) -> Any:
    """A hashable key for a raw value (to find the distinct candidates of a split)."""
    if isinstance(value, (str, int, float, bool)):
        return value
    arr = np.asarray(value)
    return (arr.dtype.str, arr.shape, arr.tobytes())


def run_evaluators(recipe: Recipe, parts: Assembled, plugins: Plugins, device: torch.device,
                   split: str = "test") -> list[dict[str, Any]]:
    """Run every evaluator of the recipe on ``split``; return all rows."""
    ctx = EvalContext(parts, split, device, recipe.train.batch_size, recipe.seed)
    rows: list[dict[str, Any]] = []
    for node in recipe.eval:
        evaluator = plugins.build("evaluator", node.plugin, **node.options())
        rows += evaluator(ctx)
    return rows


def format_value(value: Any) -> str:
    """Numbers to 4 decimals; everything else as text."""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def report_markdown(rows: list[dict[str, Any]], title: str = "Evaluation") -> str:
    """The rows as a Markdown table (query lists joined with '+')."""
    if not rows:
        return f"# {title}\n\nNo evaluators in the recipe.\n"
    cols = ["task", "target", "query", "metric", "value"]
    extra = sorted({k for r in rows for k in r} - set(cols))
    cols += extra
    lines = [f"# {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = ["+".join(r[c]) if c == "query" else format_value(r.get(c, "")) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(run_dir: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``eval/report.json``, ``eval/report.md`` and the PNG plots; return the folder."""
    from .report_plots import write_plots

    out = Path(run_dir) / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.json", json.dumps(rows, indent=2) + "\n")
    plots = write_plots(out, rows, Path(run_dir).name)
    markdown = report_markdown(rows, f"Evaluation of {Path(run_dir).name}")
    markdown += "".join(f"\n![{p.stem}]({p.name})\n" for p in plots)
    atomic_write_text(out / "report.md", markdown)
    return out


def evaluate(run_dir: str | Path, checkpoint: str = "last", plugins: Plugins | None = None,
             split: str = "test", evaluators: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Re-run a finished run's evaluators (plus ``evaluators``, extra ``{plugin: ...}`` nodes)
    from its checkpoint and rewrite its report."""
    from .assemble import assemble
    from .checkpoint import load_weights
    from .plugins import default_plugins
    from .recipe import load_recipe
    from .run_dir import RECIPE_FILE
    from .train import pick_device

    plugins = plugins or default_plugins()
    run_dir = Path(run_dir)
    recipe = load_recipe(run_dir / RECIPE_FILE, plugins=plugins)
    if evaluators:
        from .recipe import validate_recipe

        raw = recipe.model_dump(mode="json")
        raw["eval"] = raw["eval"] + list(evaluators)
        recipe = validate_recipe(raw, f"{run_dir / RECIPE_FILE} with the added evaluators", plugins)
    parts = assemble(recipe, plugins)
    parts.load_state_dict(load_weights(run_dir / "checkpoints" / checkpoint))
    device = pick_device(recipe.train.device)
    parts.model.to(device)
    parts.loss.to(device)
    rows = run_evaluators(recipe, parts, plugins, device, split)
    write_report(run_dir, rows)
    plugins.pm.hook.on_eval_end(rows=rows, run_dir=run_dir, split=split)
    return rows
