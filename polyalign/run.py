"""``polyalign.train``: train a recipe (or resume a run), then evaluate it.

It sits above :mod:`polyalign.training` and :mod:`polyalign.evaluation`, which do not import
each other.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path

import torch

from polyalign.core.assemble import with_rebuild_options
from polyalign.core.device import pick_device
from polyalign.core.errors import PolyalignError
from polyalign.core.plugin_manager import Plugins, default_plugins
from polyalign.core.recipe import Recipe, load_recipe
from polyalign.core.requirements import check_requirements
from polyalign.core.step_cost import recipe_step_cost
from polyalign.evaluation.evaluate import EvaluatorsFailed, check_eval_split, run_evaluators, write_report
from polyalign.files.atomic import os_error_message
from polyalign.training.distributed import broadcast_from_main, finish_distributed, init_distributed
from polyalign.training.loop import Trainer
from polyalign.training.run_dir import new_run_dir, resume_recipe, write_recipe
from polyalign.training.run_lock import hold_run_dir


def note_step_cost(recipe: Recipe, trainer: Trainer) -> None:
    """Say before the first step when one loss step costs over 10 CLIP steps or over a minute."""
    found = recipe_step_cost(recipe, trainer.loss_fn, trainer.device, only_slow=True)
    if found is not None and found[0].slow:
        print(f"note: {found[1]}", file=sys.stderr, flush=True)


def train(recipe: Recipe | str | Path, out: str | Path | None = None, resume: str | Path | None = None,
          overrides: list[str] | None = None, plugins: Plugins | None = None) -> Path:
    """Train a recipe (or resume the run in ``resume``, with the ``overrides`` a resume allows);
    evaluate it; return the run directory.

    One process at a time holds a run directory. A new run that fails before its first optimizer
    step leaves no run directory behind.
    """
    plugins = plugins or default_plugins()
    changed: list[str] = []
    if resume is not None:
        run_dir = Path(resume)
        recipe, changed = resume_recipe(run_dir, overrides, plugins)
    elif not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides, plugins)
    check_requirements(recipe, plugins, f"recipe {recipe.name!r}")  # before any step: not after training
    dist = init_distributed(pick_device(recipe.train.device).type)
    if resume is None:
        run_dir = broadcast_from_main(new_run_dir(Path(out) if out else Path("runs"), recipe)
                                      if dist.is_main else None)
    trainer = None
    threads = torch.get_num_threads()  # the trainer sets train.threads; the caller gets its own back
    try:
        with hold_run_dir(run_dir, dist):
            if changed and dist.is_main:  # the overrides a resume allows are applied, and recorded
                write_recipe(run_dir, recipe)
            loggers = [plugins.build("logger", node.plugin, {"run_dir": run_dir}, **node.options())
                       for node in recipe.loggers]
            for logger in loggers:
                plugins.pm.register(logger)
            try:
                trainer = Trainer(recipe, run_dir, plugins, dist, resume=resume is not None)
                check_eval_split(recipe, trainer.parts, split="test")
                if resume is None and dist.is_main:  # record inferred encoder options (load without data)
                    write_recipe(run_dir, with_rebuild_options(trainer.recipe, trainer.model, plugins))
                if dist.is_main:
                    note_step_cost(recipe, trainer)
                metrics = trainer.fit()
                parts = trainer.evaluation_parts()
                if dist.is_main:
                    notes: list[str] = []
                    ranks: list = []
                    try:
                        rows = run_evaluators(recipe, parts, plugins, trainer.device, split="test", notes=notes,
                                              ranks=ranks)
                    except EvaluatorsFailed as exc:  # the others' rows are kept, and how to evaluate again said
                        write_report(run_dir, exc.rows, notes, ranks)
                        raise EvaluatorsFailed(exc.failures, exc.rows, run_dir) from None
                    write_report(run_dir, rows, notes, ranks)
                    plugins.pm.hook.on_eval_end(rows=rows, run_dir=run_dir, split="test")
                    plugins.pm.hook.on_train_end(run_dir=run_dir, metrics=metrics)
                finish_distributed()
            except BaseException as exc:
                if dist.is_main:
                    with contextlib.suppress(Exception):  # a logger failing to close must not hide the error
                        plugins.pm.hook.on_train_error(run_dir=run_dir, error=exc)
                raise
            finally:
                for logger in loggers:
                    plugins.pm.unregister(logger)
    except BaseException as exc:
        started = trainer is not None and trainer.started
        if resume is None and dist.is_main and not started:
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing was trained: leave no half run directory
        if isinstance(exc, OSError) and (started or resume is not None):  # a full disk: the run goes on after it
            raise PolyalignError(os_error_message(exc, f"then continue with `polyalign train --resume {run_dir}`")) \
                from exc
        raise
    finally:
        torch.set_num_threads(threads)
    return run_dir
