"""What a recipe's plugins need installed, checked before anything runs: each component's
``requires`` (given when it is registered) plus what its options ask for (a config's ``requires()``,
e.g. an encoder's ``lora`` needs peft). A missing module is found without importing anything."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .errors import RecipeError
from .registry import KINDS

if TYPE_CHECKING:
    from .plugin_manager import Plugins
    from .recipe import PluginNode, Recipe


def install_hint(requirement: str) -> str:
    """``pip install 'polyalign[probe]'`` for a requirement (quoted when the shell would read it)."""
    quoted = any(c in requirement for c in "[]<>=!~; ")
    return f"pip install '{requirement}'" if quoted else f"pip install {requirement}"


def is_installed(module: str) -> bool:
    """Whether a top-level module can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-installed package
        return False


def recipe_nodes(recipe: Recipe) -> list[tuple[str, str, PluginNode]]:
    """(kind, yaml path, node) of every plugin node of a validated recipe."""
    nodes: list[tuple[str, str, PluginNode]] = [("dataset", "data", recipe.data)]
    nodes += [("encoder", f"modalities.{m}.encoder", node.encoder) for m, node in recipe.modalities.items()]
    losses = recipe.losses
    nodes += [("loss", "loss" if len(losses) == 1 and not isinstance(recipe.loss, list) else f"loss.{i}", n)
              for i, n in enumerate(losses)]
    nodes += [("evaluator", f"eval.{i}", n) for i, n in enumerate(recipe.eval)]
    nodes += [("logger", f"logging.{i}", n) for i, n in enumerate(recipe.loggers)]
    return nodes


def missing_requirements(recipe: Recipe, plugins: Plugins,
                         kinds: Iterable[str] = KINDS) -> list[tuple[str, str]]:
    """(yaml path, problem) for every module a plugin of the recipe needs and this environment lacks."""
    from .recipe import plugin_context

    problems: list[tuple[str, str]] = []
    wanted = set(kinds)
    for kind, path, node in recipe_nodes(recipe):
        if kind not in wanted:
            continue
        comp = plugins.registry.get(kind, node.plugin)
        needs = dict(comp.requires)
        asked = getattr(comp.make_config(node.options(), plugin_context(recipe)), "requires", None)
        if callable(asked):
            needs.update(asked())
        for module, requirement in needs.items():
            if not is_installed(module):
                problem = (f"{kind} {node.plugin!r} needs the module {module!r}, which is not installed: "
                           f"{install_hint(requirement)}")
                problems.append((path, problem))
    return problems


def check_requirements(recipe: Recipe, plugins: Plugins, source: str, kinds: Iterable[str] = KINDS) -> None:
    """Refuse a recipe whose plugins need modules that are not installed, naming what to install."""
    problems = missing_requirements(recipe, plugins, kinds)
    if problems:
        raise RecipeError(source, problems)
