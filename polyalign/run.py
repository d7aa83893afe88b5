"""``polyalign.train``: train a recipe (or resume a run), then evaluate it.

It sits above :mod:`polyalign.training` and :mod:`polyalign.evaluation`, which do not import
each other.
"""

from __future__ import annotations

from pathlib import Path

from polyalign.core.assemble import with_rebuild_options
from polyalign.core.device import pick_device
from polyalign.core.errors import PolyalignError
from polyalign.core.plugins import Plugins, default_plugins
from polyalign.core.recipe import Recipe, load_recipe
from polyalign.core.run_files import RECIPE_FILE
from polyalign.evaluation.evaluate import run_evaluators, write_report
from polyalign.training.distributed import broadcast_path, finish_distributed, init_distributed
from polyalign.training.loop import Trainer
from polyalign.training.run_dir import new_run_dir, write_recipe


def train(recipe: Recipe | str | Path, out: str | Path | None = None, resume: str | Path | None = None,
          overrides: list[str] | None = None, plugins: Plugins | None = None) -> Path:
    """Train a recipe (or resume the run in ``resume``); evaluate it; return the run directory."""
    plugins = plugins or default_plugins()
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / RECIPE_FILE).is_file():
            raise PolyalignError(f"--resume {run_dir}: not a run directory (no {RECIPE_FILE})")
        recipe = load_recipe(run_dir / RECIPE_FILE, overrides, plugins)
    elif not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides, plugins)
    dist = init_distributed(pick_device(recipe.train.device).type)
    if resume is None:
        run_dir = broadcast_path(new_run_dir(Path(out) if out else Path("runs"), recipe)
                                 if dist.is_main else None)
    loggers = [plugins.build("logger", name, {"run_dir": run_dir}) for name in recipe.logging]
    for logger in loggers:
        plugins.pm.register(logger)
    try:
        trainer = Trainer(recipe, run_dir, plugins, dist, resume=resume is not None)
        if resume is None and dist.is_main:  # record inferred encoder options (load without data)
            write_recipe(run_dir, with_rebuild_options(recipe, trainer.model, plugins))
        metrics = trainer.fit()
        parts = trainer.evaluation_parts()
        if dist.is_main:
            rows = run_evaluators(recipe, parts, plugins, trainer.device, split="test")
            write_report(run_dir, rows)
            plugins.pm.hook.on_eval_end(rows=rows, run_dir=run_dir, split="test")
            plugins.pm.hook.on_train_end(run_dir=run_dir, metrics=metrics)
        finish_distributed()
    finally:
        for logger in loggers:
            plugins.pm.unregister(logger)
    return run_dir
