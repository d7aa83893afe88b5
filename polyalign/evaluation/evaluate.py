"""Evaluation of a run: its recipe's evaluators on a split, the report files and plots."""

from __future__ import annotations

import json
import shlex
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from polyalign.core.assemble import Assembled, assemble
from polyalign.core.device import pick_device
from polyalign.core.errors import Notice, PolyalignError
from polyalign.core.evaluator import EvalContext, report_markdown, row_problem
from polyalign.core.modality_check import provided_text, row_keys
from polyalign.core.plugin_manager import Plugins, default_plugins
from polyalign.core.recipe import Recipe, load_recipe, validate_recipe
from polyalign.core.requirements import check_requirements
from polyalign.files.atomic import atomic_write_text
from polyalign.files.run_files import RANKS_JSON, RECIPE_FILE, REPORT_DIR, REPORT_JSON, REPORT_MD
from polyalign.files.weights import load_weights, run_checkpoint

from .compare import RunReport
from .headline import config_headline, default_patterns, pattern_text
from .report_plots import write_plots


def check_eval_split(recipe: Recipe, parts: Assembled, split: str = "test") -> None:
    """Refuse to evaluate an empty split: say so before anything is trained or computed."""
    if recipe.eval and len(parts.dataset.split(split)) == 0:
        raise PolyalignError(
            f"eval: the recipe has {len(recipe.eval)} evaluator(s) but the {recipe.data.plugin!r} dataset's "
            f"{split} split is empty, so there is nothing to evaluate. Give the dataset a {split} split (a "
            f"manifest folder: {split}.jsonl or {split}.csv) or train without evaluators (eval=[]).")


def no_rows_note(where: str, ctx: EvalContext, caught: list[warnings.WarningMessage]) -> str:
    """Why an evaluator produced no rows: the modalities absent from every row of the split, what
    it warned about, or else what it needs."""
    samples = ctx.samples
    have = set(row_keys(samples))
    absent = [m for m in ctx.modalities if m not in have]
    if absent:
        why = (f"{', '.join(map(repr, absent))} {'is' if len(absent) == 1 else 'are'} absent from every one of the "
               f"{len(samples)} rows of the {ctx.split!r} split, whose rows provide "
               f"{provided_text(ctx.parts.dataset.split(ctx.split), samples)}")
    elif any(issubclass(w.category, UserWarning) for w in caught):
        why = "; ".join(str(w.message) for w in caught if issubclass(w.category, UserWarning))
    else:
        why = (f"no row of the {ctx.split!r} split ({len(samples)} rows) has every modality one of its queries "
               f"and targets needs, or the rows it needs (labels, distinct values) are missing")
    return f"{where} produced no rows: {why}"


class EvaluatorsFailed(PolyalignError):
    """Some evaluators failed; ``rows`` holds what the others produced. With ``run_dir``, the message
    says where those rows and the weights are and gives the command that runs the evaluation again."""

    def __init__(self, failures: list[str], rows: list[dict[str, Any]], run_dir: Path | None = None):
        self.failures, self.rows, self.run_dir = failures, rows, run_dir
        text = f"{len(failures)} evaluator(s) failed: " + "; ".join(failures)
        if run_dir is not None:
            text += (f". The rows of the other evaluators are in {run_dir / REPORT_DIR / REPORT_MD}, the trained "
                     f"weights in {run_dir}; after fixing it, evaluate again with: polyalign eval "
                     f"{shlex.quote(str(run_dir))}")
        super().__init__(text)


def run_evaluators(recipe: Recipe, parts: Assembled, plugins: Plugins, device: torch.device,
                   split: str = "test", notes: list[str] | None = None,
                   ranks: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Run every evaluator of the recipe on ``split``; return all rows (and append the per-query ranks
    the evaluators record to ``ranks`` when given). An evaluator that fails does not stop the others:
    :class:`EvaluatorsFailed` is raised at the end, with their rows. One that produces no rows is a
    :class:`Notice` saying why, and a line in ``notes`` when given."""
    ctx = EvalContext(parts, split, device, recipe.train.batch_size, recipe.seed, ranks)
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    for i, node in enumerate(recipe.eval):
        caught: list[warnings.WarningMessage] = []
        try:
            evaluator = plugins.build("evaluator", node.plugin, **node.options())
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                got = evaluator(ctx)
        except Exception as exc:  # noqa: BLE001 - reported with the others' rows below
            reason = str(exc) if isinstance(exc, PolyalignError) else f"unexpected {type(exc).__name__}: {exc}"
            failures.append(f"eval.{i} ({node.plugin}): {reason}")
            continue
        finally:
            for w in caught:  # shown as before, and kept to explain an empty result
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if got == []:  # said on the console as a notice, and in report.md through ``notes``
            note = no_rows_note(f"eval.{i} ({node.plugin})", ctx, caught)
            warnings.warn(Notice(note), stacklevel=2)
            if notes is not None:
                notes.append(note)
        if not isinstance(got, list):
            problem = f"it returned a {type(got).__name__}"
        else:
            problem = next((f"row {j}: {p}" for j, r in enumerate(got) if (p := row_problem(r))), None)
        if problem:
            failures.append(f"eval.{i}: evaluator plugin {node.plugin!r} must return a list of rows "
                            f"{{task, target, query, metric, value}}; {problem}")
            continue
        rows += got
    if failures:
        raise EvaluatorsFailed(failures, rows)
    return rows


def headline_sentence(run_dir: Path, rows: list[dict[str, Any]]) -> str:
    """'**Headline: 0.731** [0.69, 0.77] ...': the run's default headline (as ``polyalign compare`` takes
    it) with its percentile bootstrap interval over the test tuples; empty when no default fits."""
    run = RunReport(Path(run_dir), Path(run_dir).name, rows)
    patterns = default_patterns([run])
    if patterns is None:
        return ""
    found = config_headline(run.label, [run], patterns)
    interval = (f" [{found.ci_low:.3f}, {found.ci_high:.3f}] (95% percentile bootstrap over the test tuples)"
                if found.ci_low is not None else "")
    chosen = " ".join(pattern_text(p) for p in patterns)
    n = len(found.rows)
    return f"**Headline: {found.value:.3f}**{interval}: the mean of {chosen} ({n} row{'s' * (n != 1)})."


def write_report(run_dir: Path, rows: list[dict[str, Any]], notes: Sequence[str] = (),
                 ranks: list[dict[str, Any]] | None = None) -> Path:
    """Write ``eval/report.json``, ``eval/report.md`` (with ``notes``, e.g. why an evaluator
    produced no rows), the PNG plots and (when given) the per-query ranks ``eval/ranks.json``;
    return the folder."""
    out = Path(run_dir) / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    if ranks is not None:  # before report.json: a run whose report exists has both
        atomic_write_text(out / RANKS_JSON, json.dumps(ranks) + "\n")
    atomic_write_text(out / REPORT_JSON, json.dumps(rows, indent=2) + "\n")
    plots = write_plots(out, rows, Path(run_dir).name)
    markdown = report_markdown(rows, f"Evaluation of {Path(run_dir).name}", notes, headline_sentence(run_dir, rows))
    markdown += "".join(f"\n![{p.stem}]({p.name})\n" for p in plots)
    atomic_write_text(out / REPORT_MD, markdown)
    return out


def evaluate(run_dir: str | Path, checkpoint: str = "last", plugins: Plugins | None = None,
             split: str = "test", evaluators: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Re-run a finished run's evaluators (plus ``evaluators``, extra ``{plugin: ...}`` nodes)
    from its checkpoint and rewrite its report."""
    plugins = plugins or default_plugins()
    run_dir = Path(run_dir)
    if not (run_dir / RECIPE_FILE).is_file():
        problem = ("does not exist" if not run_dir.exists() else "is not a folder" if not run_dir.is_dir()
                   else f"holds no {RECIPE_FILE}")
        raise PolyalignError(f"{run_dir} {problem}; give a run directory (the folder `polyalign train` printed)")
    recipe = load_recipe(run_dir / RECIPE_FILE, plugins=plugins)
    if evaluators:
        raw = recipe.model_dump(mode="json")
        raw["eval"] = raw["eval"] + list(evaluators)
        recipe = validate_recipe(raw, f"{run_dir / RECIPE_FILE} with the added evaluators", plugins)
    check_requirements(recipe, plugins, str(run_dir / RECIPE_FILE), kinds=("dataset", "encoder", "loss", "evaluator"))
    parts = assemble(recipe, plugins)
    check_eval_split(recipe, parts, split)
    parts.load_state_dict(load_weights(run_checkpoint(run_dir, checkpoint)))
    device = pick_device(recipe.train.device)
    parts.model.to(device)
    parts.loss.to(device)
    notes: list[str] = []
    ranks: list[dict[str, Any]] = []
    try:
        rows = run_evaluators(recipe, parts, plugins, device, split, notes, ranks)
    except EvaluatorsFailed as exc:
        write_report(run_dir, exc.rows, notes, ranks)
        raise EvaluatorsFailed(exc.failures, exc.rows, run_dir) from None
    write_report(run_dir, rows, notes, ranks)
    plugins.pm.hook.on_eval_end(rows=rows, run_dir=run_dir, split=split)
    return rows
