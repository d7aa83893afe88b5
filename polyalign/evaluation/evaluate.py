"""Evaluation of a run: its recipe's evaluators on a split, the report files and plots."""

from __future__ import annotations

import contextlib
import json
import shlex
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pydantic_core import to_jsonable_python

from polyalign.core.assemble import Assembled, assemble
from polyalign.core.device import pick_device
from polyalign.core.errors import Notice, PluginError, PolyalignError
from polyalign.core.evaluator import EvalContext, read_report, report_markdown, row_problem
from polyalign.core.modality_check import provided_text, row_keys
from polyalign.core.plugin_manager import Plugins, default_plugins
from polyalign.core.recipe import Recipe, load_recipe, validate_recipe
from polyalign.core.recipe_schema import PluginNode
from polyalign.core.requirements import check_requirements
from polyalign.files.atomic import atomic_write_text
from polyalign.files.json_file import read_json
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


def evaluator_name(node: PluginNode, plugins: Plugins) -> str:
    """How a row names the evaluator node that produced it: the plugin, then the options it sets
    away from the plugin's defaults (sorted), e.g. ``retrieval {"match": "label"}``; two nodes are one
    evaluator when their names are equal."""
    options = node.options()
    with contextlib.suppress(PluginError):  # not installed: every option is named
        fields = plugins.registry.get("evaluator", node.plugin).config.model_fields
        defaults = {k: to_jsonable_python(f.get_default(call_default_factory=True)) for k, f in fields.items()
                    if not f.is_required()}
        options = {k: v for k, v in options.items() if k not in defaults or defaults[k] != v}
    return node.plugin + (f" {json.dumps(options, sort_keys=True)}" if options else "")


def run_evaluators(recipe: Recipe, parts: Assembled, plugins: Plugins, device: torch.device,
                   split: str = "test", notes: list[str] | None = None,
                   ranks: list[dict[str, Any]] | None = None, only: set[int] | None = None) -> list[dict[str, Any]]:
    """Run every evaluator of the recipe (or those at the positions in ``only``) on ``split``; return
    all rows, each naming its evaluator (:func:`evaluator_name`) under ``evaluator`` (and append the
    per-query ranks the evaluators record to ``ranks`` when given, named the same way). An evaluator
    that fails does not stop the others: :class:`EvaluatorsFailed` is raised at the end, with their
    rows. One that produces no rows is a :class:`Notice` saying why, and a line in ``notes`` when
    given, as is each notice an evaluator gives."""
    ctx = EvalContext(parts, split, device, recipe.train.batch_size, recipe.seed, ranks)
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    for i, node in enumerate(recipe.eval):
        if only is not None and i not in only:
            continue
        name, recorded = evaluator_name(node, plugins), len(ranks) if ranks is not None else 0
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
                if notes is not None and issubclass(w.category, Notice) and str(w.message) not in notes:
                    notes.append(str(w.message))  # a notice is said in report.md too, once
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
        rows += [{**row, "evaluator": name} for row in got]
        for entry in (ranks or [])[recorded:]:
            entry["evaluator"] = name
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


def added_evaluators(run_dir: Path, recipe: Recipe, evaluators: list[dict[str, Any]], plugins: Plugins
                     ) -> tuple[Recipe, set[int] | None, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """The recipe with ``evaluators`` added, the positions to run (an added node equal to an earlier
    one runs as that one), and the rows and ranks of the run's report to keep: those of every other
    evaluator. With no report yet, or one whose rows do not name their evaluator (written before rows
    did), every evaluator runs and nothing is kept."""
    raw = recipe.model_dump(mode="json")
    first = len(raw["eval"])
    raw["eval"] = raw["eval"] + list(evaluators)
    recipe = validate_recipe(raw, f"{run_dir / RECIPE_FILE} with the added evaluators", plugins)
    names = [evaluator_name(n, plugins) for n in recipe.eval]
    run = set(names[first:])
    previous = read_report(run_dir / REPORT_DIR / REPORT_JSON, missing_ok=True)
    if not previous or any("evaluator" not in r for r in previous):
        return recipe, None, ([], [])
    ranks_file = run_dir / REPORT_DIR / RANKS_JSON
    ranks = read_json(ranks_file, "per-query ranks", max_bytes=256 << 20) if ranks_file.is_file() else []
    return (recipe, {names.index(name) for name in run},
            ([r for r in previous if r["evaluator"] not in run],
             [r for r in ranks if isinstance(r, dict) and r.get("evaluator") not in run]))


def read_run_recipe(run_dir: Path, plugins: Plugins) -> Recipe:
    """The recipe of a finished run; refuses a folder that is not a run directory."""
    if not (run_dir / RECIPE_FILE).is_file():
        problem = ("does not exist" if not run_dir.exists() else "is not a folder" if not run_dir.is_dir()
                   else f"holds no {RECIPE_FILE}")
        raise PolyalignError(f"{run_dir} {problem}; give a run directory (the folder `polyalign train` printed)")
    return load_recipe(run_dir / RECIPE_FILE, plugins=plugins)


def load_trained(run_dir: Path, checkpoint: str, plugins: Plugins, split: str = "test",
                 recipe: Recipe | None = None) -> tuple[Recipe, Assembled, torch.device]:
    """A finished run's recipe (``recipe``: as the caller changed it; default its ``recipe.yaml``) and its
    parts with the ``checkpoint``'s weights, on the recipe's device; refuses a missing run or an empty ``split``."""
    recipe = recipe or read_run_recipe(run_dir, plugins)
    check_requirements(recipe, plugins, str(run_dir / RECIPE_FILE), kinds=("dataset", "encoder", "loss", "evaluator"))
    parts = assemble(recipe, plugins)
    check_eval_split(recipe, parts, split)
    parts.load_state_dict(load_weights(run_checkpoint(run_dir, checkpoint)))
    device = pick_device(recipe.train.device)
    parts.model.to(device)
    parts.loss.to(device)
    return recipe, parts, device


def evaluate(run_dir: str | Path, checkpoint: str = "last", plugins: Plugins | None = None,
             split: str = "test", evaluators: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Re-run a finished run's evaluators from its checkpoint and rewrite its report; with
    ``evaluators`` (extra ``{plugin: ...}`` nodes), run only those and merge their rows (and ranks)
    into the report there is, replacing the rows an earlier run of the same evaluator and options
    wrote (see :func:`added_evaluators`)."""
    plugins = plugins or default_plugins()
    run_dir = Path(run_dir)
    recipe = read_run_recipe(run_dir, plugins)
    kept: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])
    only = None
    if evaluators:
        recipe, only, kept = added_evaluators(run_dir, recipe, evaluators, plugins)
    recipe, parts, device = load_trained(run_dir, checkpoint, plugins, split, recipe)
    notes: list[str] = []
    ranks: list[dict[str, Any]] = []
    try:
        rows = kept[0] + run_evaluators(recipe, parts, plugins, device, split, notes, ranks, only)
    except EvaluatorsFailed as exc:
        write_report(run_dir, kept[0] + exc.rows, notes, kept[1] + ranks)
        raise EvaluatorsFailed(exc.failures, kept[0] + exc.rows, run_dir) from None
    write_report(run_dir, rows, notes, kept[1] + ranks)
    plugins.pm.hook.on_eval_end(rows=rows, run_dir=run_dir, split=split)
    return rows
