"""Recipes: read a YAML file, apply ``key.path=value`` overrides, validate it once, every problem at once.

Whether a recipe is valid depends on the recipe alone (and the plugins installed), never on the
machine that validates it: whether it fits this machine is :mod:`polyalign.core.machine_fit`'s question.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from polyalign.files.yaml_file import YamlError, check_tree, read_yaml

from .errors import RecipeError
from .overrides import apply_overrides, drop_replaced_plugin_options, parse_overrides, plugin_names
from .plugin_manager import Plugins, default_plugins
from .plugin_nodes import check_node, raw_plugin_nodes
from .recipe_schema import FORM_TAGS, SECTION_MODELS, Recipe, modality_name_problem
from .registry import unknown_name_message
from .validation_errors import pydantic_problems, yaml_path

__all__ = ["Recipe", "load_recipe", "name_from_file", "validate_recipe"]


def validate_recipe(raw: Any, source: str = "recipe", plugins: Plugins | None = None) -> Recipe:
    """Validate a raw recipe mapping; raise :class:`RecipeError` listing every problem."""
    plugins = plugins or default_plugins()
    if not isinstance(raw, dict):
        raise RecipeError(source, [("", f"a recipe must be a YAML mapping, got {type(raw).__name__}")])
    structure = check_tree(raw)
    if structure is not None:
        raise RecipeError(source, [structure])
    problems: list[tuple[str, str]] = []
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        recipe = None
        problems += pydantic_problems(exc, models=SECTION_MODELS, tags=FORM_TAGS)
    if isinstance(raw.get("modalities"), dict):
        problems += [(yaml_path(("modalities", m)), problem) for m in raw["modalities"]
                     if (problem := modality_name_problem(m)) is not None]
    if raw.get("loss") == []:
        problems.append(("loss", "an empty list; give at least one loss plugin node {plugin: NAME, ...}"))
    context = recipe.plugin_context() if recipe is not None else None
    resolved: dict[tuple, dict] = {}  # yaml path -> the node with every default filled in
    for kind, loc, node in raw_plugin_nodes(raw):
        found, full_node = check_node(kind, loc, node, plugins, context)
        problems += found
        if full_node is not None:
            resolved[loc] = full_node
    if isinstance(raw.get("logging"), list):
        names = plugins.registry.names("logger")
        problems += [(f"logging.{i}", unknown_name_message("logger", n, names))
                     for i, n in enumerate(raw["logging"]) if isinstance(n, str) and n not in names]
    if recipe is not None and not problems:
        problems += _cross_checks(recipe)
    if problems:
        raise RecipeError(source, list(dict.fromkeys(problems)))
    assert recipe is not None
    for loc, full_node in resolved.items():
        _replace_node(recipe, loc, full_node)
    return recipe


def _replace_node(recipe: Recipe, loc: tuple, full_node: dict) -> None:
    """Put ``full_node`` (a plugin node with its defaults filled in) at ``loc`` in ``recipe``."""
    parent: Any = recipe
    for key in loc[:-1]:
        parent = parent[key] if isinstance(parent, (list, dict)) else getattr(parent, key)
    last = loc[-1]
    old = parent[last] if isinstance(parent, list) else getattr(parent, last)
    node = type(old).model_validate(full_node)
    if isinstance(parent, list):
        parent[last] = node
    else:
        setattr(parent, last, node)


def _cross_checks(recipe: Recipe) -> list[tuple[str, str]]:
    """Checks that span sections: modality names used by losses, evaluators and `missing`."""
    names = list(recipe.modalities)
    problems = []
    if len(names) < 2:
        problems.append(("modalities", f"contrastive learning needs at least 2 modalities, got {len(names)}"))

    def check(path: str, value: Any) -> None:
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, str) and v not in names and v != "all":
                problems.append((path, f"modality {v!r} is not in modalities ({', '.join(names)})"))

    for i, node in enumerate(recipe.losses):
        prefix = "loss" if not isinstance(recipe.loss, list) else f"loss.{i}"
        for key in ("anchor",):
            if node.options().get(key) is not None:
                check(f"{prefix}.{key}", node.options()[key])
    chosen = [i for i, node in enumerate(recipe.losses) if node.score_with]
    if len(chosen) > 1:
        problems.append(("loss", f"score_with is set on loss nodes {', '.join(map(str, chosen))}; a weighted sum "
                                 f"scores with one term alone, or (no score_with) with every term"))
    if recipe.model.balance == "gradients" and (len(recipe.losses) < 2 or recipe.model.spaces == "shared"):
        problems.append(("model.balance", "gradients balances the terms of a list of losses that train spaces of "
                                          "their own; with " + ("one loss" if len(recipe.losses) < 2 else
                                                                "model.spaces: shared") +
                         " there is nothing to balance: leave model.balance: auto"))
    for i, node in enumerate(recipe.eval):
        for key in ("target", "targets", "query"):
            if node.options().get(key) is not None:
                check(f"eval.{i}.{key}", node.options()[key])
    for m in recipe.missing.train_rate:
        check(f"missing.train_rate.{m}", m)
    for m in recipe.model.head if isinstance(recipe.model.head, dict) else ():
        check(f"model.head.{m}", m)
    if recipe.train.precision == "fp16" and recipe.train.strategy == "fsdp":
        problems.append(("train.precision", "fp16 does not combine with train.strategy: fsdp (torch's sharded "
                                            "gradient scaler fails with the fused optimizer); use bf16 with fsdp"))
    return problems


def name_from_file(path: Path) -> str:
    """The ``name`` of a recipe that gives none: its file name without the suffix, each run of
    characters a name may not hold (anything but letters, digits, ``_``, ``.``, ``-``) made one ``-``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).strip("-")[:100] or "recipe"


def load_recipe(path: str | Path, overrides: list[str] | None = None,
                plugins: Plugins | None = None) -> Recipe:
    """Read a YAML recipe, apply ``key.path=value`` overrides and validate it."""
    path = Path(path)
    if not path.is_file():
        problem = "file not found" if not path.exists() else "a folder, not a file" if path.is_dir() else \
            "not a regular file (a device, pipe or socket)"
        raise RecipeError(str(path), [("", f"{problem}; `polyalign recipes` lists the shipped recipes")])
    try:
        raw = read_yaml(path)
    except YamlError as exc:
        raise RecipeError(str(path), [(exc.path, exc.reason)]) from None
    if isinstance(raw, dict):
        raw.setdefault("name", name_from_file(path))
        given = [tuple(keys) for keys, _ in parse_overrides(overrides)]
        for item in overrides or []:  # one at a time: each plugin change is seen against the node it replaced
            names = plugin_names(raw)
            raw = apply_overrides(raw, [item])
            for note in drop_replaced_plugin_options(names, raw, given, plugins or default_plugins()):
                warnings.warn(note, stacklevel=2)
    return validate_recipe(raw, str(path), plugins)
