"""The run directory: ``runs/<name>-<timestamp>/`` with the resolved recipe inside, and what a resume may change."""

from __future__ import annotations

import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

from polyalign.core.errors import PolyalignError
from polyalign.core.plugin_manager import Plugins
from polyalign.core.recipe import Recipe, load_recipe
from polyalign.files.atomic import atomic_write_text, describe_os_error
from polyalign.files.run_files import RECIPE_FILE
from polyalign.files.weights import WEIGHTS


def new_run_dir(base: Path, recipe: Recipe) -> Path:
    """Create ``base/<name>-<timestamp>`` (suffixed if taken) holding ``recipe.yaml``."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        base.mkdir(parents=True, exist_ok=True)
        run_dir = base / f"{recipe.name}-{stamp}"
        n = 1
        while True:
            try:
                run_dir.mkdir()
                break
            except FileExistsError:
                n += 1
                run_dir = base / f"{recipe.name}-{stamp}-{n}"
    except OSError as exc:
        raise PolyalignError(f"cannot create a run directory under {base}: {describe_os_error(exc)}") from None
    try:
        write_recipe(run_dir, recipe)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)  # no run directory without its recipe
        raise
    return run_dir


def write_recipe(run_dir: Path, recipe: Recipe) -> None:
    """Write the resolved ``recipe.yaml`` of a run (atomically)."""
    atomic_write_text(Path(run_dir) / RECIPE_FILE, f"# polyalign train {RECIPE_FILE} (resolved)\n" + recipe.to_yaml())


RESUMABLE = ("description", "eval", "logging", "train.epochs", "train.max_steps", "train.log_every",
             "train.checkpoint_every", "train.keep_last", "train.on_nan", "train.max_nan_skips", "train.device",
             "train.num_workers", "train.threads", "train.pin_memory", "train.compile")
"""What ``--resume RUN key=value`` may change: how long the run goes on, what it logs, keeps and
evaluates, and where and how fast it runs. Anything else (the model, the data, the loss, the batch,
the seed, the optimiser, the precision...) would make the rest of the run a different run."""


def changed_keys(old: Any, new: Any, path: str = "") -> list[str]:
    """Dotted paths where two recipe dumps differ (mappings compared key by key, other values whole)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [k for key in dict.fromkeys([*old, *new])
                for k in changed_keys(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))]
    return [] if old == new else [path]


def resume_recipe(run_dir: Path, overrides: list[str] | None, plugins: Plugins) -> tuple[Recipe, list[str]]:
    """The recipe a resumed run continues with: its ``recipe.yaml`` with ``overrides`` applied, and
    the keys they change. Raises naming the keys that may not change on resume (see :data:`RESUMABLE`)."""
    path = Path(run_dir) / RECIPE_FILE
    if not path.is_file():
        raise PolyalignError(f"--resume {run_dir}: not a run directory (no {RECIPE_FILE})")
    if (Path(run_dir) / WEIGHTS).is_file():  # a run keeps its weights under checkpoints/, an export beside its recipe
        raise PolyalignError(f"--resume {run_dir}: this is an exported model ({WEIGHTS} beside {RECIPE_FILE}), not a "
                             f"run directory, and training inside it would change the export. Resume the run it was "
                             f"exported from, or start a new run: polyalign train {path}")
    saved = load_recipe(path, None, plugins)
    if not overrides:
        return saved, []
    recipe = load_recipe(path, overrides, plugins)
    changed = changed_keys(saved.model_dump(mode="json"), recipe.model_dump(mode="json"))
    refused = [k for k in changed if not any(k == r or k.startswith(r + ".") for r in RESUMABLE)]
    if refused:
        raise PolyalignError(
            f"--resume {run_dir}: {', '.join(refused)} cannot change when a run is resumed: the rest of the run "
            f"would no longer continue the same model, data and loss. Start a new run with them instead "
            f"(polyalign train {path} {' '.join(overrides)}). What may change: {', '.join(RESUMABLE)}.")
    return recipe, changed
