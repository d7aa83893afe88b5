"""The run directory: ``runs/<name>-<timestamp>/`` with the resolved recipe inside."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from polyalign.core.atomic import atomic_write_text
from polyalign.core.errors import PolyalignError
from polyalign.core.recipe import Recipe
from polyalign.core.run_files import RECIPE_FILE


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
        raise PolyalignError(f"cannot create a run directory under {base}: {exc.strerror or exc}") from None
    write_recipe(run_dir, recipe)
    return run_dir


def write_recipe(run_dir: Path, recipe: Recipe) -> None:
    """Write the resolved ``recipe.yaml`` of a run (atomically)."""
    atomic_write_text(Path(run_dir) / RECIPE_FILE, f"# polyalign train {RECIPE_FILE} (resolved)\n" + recipe.to_yaml())
