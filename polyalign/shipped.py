"""The recipes shipped inside the package (``polyalign/recipes/*.yaml``, package data of the wheel)."""

from __future__ import annotations

import difflib
from importlib.resources import files
from pathlib import Path

from polyalign.core.errors import PolyalignError
from polyalign.files.yaml_file import YamlError, parse_yaml


def shipped_recipes() -> dict[str, Path]:
    """Name -> path of every shipped recipe, as installed with the package."""
    # An installed polyalign is a folder on disk (its wheel is not zip-safe), so each resource is a file path.
    folder = files("polyalign") / "recipes"
    return {entry.name.removesuffix(".yaml"): Path(str(entry))
            for entry in sorted(folder.iterdir(), key=lambda e: e.name) if entry.name.endswith(".yaml")}


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
    neither is an error suggesting the closest shipped recipe. A folder is no recipe: a shipped
    recipe's name that is also a folder here (a sweep's ``--out``) means the shipped recipe."""
    path = Path(name_or_path)
    recipes = shipped_recipes()
    if path.is_dir() and name_or_path in recipes:  # e.g. a sweep's --out folder named after its recipe
        return recipes[name_or_path]
    if path.exists() or path.suffix in (".yaml", ".yml"):
        return path
    if name_or_path in recipes:
        return recipes[name_or_path]
    if len(path.parts) > 1:  # a path, not a name: the recipe loader says the file is not there
        return path
    close = difflib.get_close_matches(name_or_path, list(recipes), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise PolyalignError(f"recipe {name_or_path!r} not found: no such file, and no shipped recipe of that "
                         f"name{hint} Shipped recipes: {', '.join(recipes) or '(none)'} "
                         f"(`polyalign recipes` gives their commands)")
