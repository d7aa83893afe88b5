"""The recipes shipped in the repository's ``recipes/`` folder."""

from __future__ import annotations

import difflib
from pathlib import Path

from polyalign.core.errors import PolyalignError
from polyalign.files.yaml_file import YamlError, parse_yaml

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


def shipped_recipes() -> dict[str, Path]:
    """Name -> path of every shipped recipe (empty if the folder is not there)."""
    if not RECIPES_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(RECIPES_DIR.glob("*.yaml"))}


def recipe_summary(path: Path) -> tuple[str, str]:
    """(command line, description) from a recipe's opening comment and ``description`` field."""
    text = path.read_text(encoding="utf-8")
    first = text.splitlines()[0] if text else ""
    command = first.lstrip("# ").strip() if first.startswith("#") else ""
    try:
        raw = parse_yaml(text, str(path))
    except YamlError:
        return command, "(not valid YAML)"
    return command, str(raw.get("description", "")) if isinstance(raw, dict) else ""


def resolve_recipe_path(name_or_path: str) -> Path:
    """A path as given if it exists, else the shipped recipe of that name; a bare name that is
    neither is an error suggesting the closest shipped recipe."""
    path = Path(name_or_path)
    if path.exists() or path.suffix in (".yaml", ".yml"):
        return path
    recipes = shipped_recipes()
    if name_or_path in recipes:
        return recipes[name_or_path]
    if len(path.parts) > 1:  # a path, not a name: the recipe loader says the file is not there
        return path
    close = difflib.get_close_matches(name_or_path, list(recipes), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise PolyalignError(f"recipe {name_or_path!r} not found: no such file, and no shipped recipe of that "
                         f"name{hint} Shipped recipes: {', '.join(recipes) or '(none)'} "
                         f"(`polyalign recipes` gives their commands)")
