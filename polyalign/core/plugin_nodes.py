"""The ``plugin:`` nodes of a recipe, each validated by its plugin's own config model."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import PluginError
from .plugin_manager import Plugins
from .registry import unknown_name_message
from .validation_errors import pydantic_problems, yaml_path

NODE_KEYS = {"loss": ("plugin", "weight", "score_with")}
"""Keys of a node that are the recipe's, not the plugin's options, by kind (default: ``plugin``)."""


def node_keys(kind: str) -> tuple[str, ...]:
    """The keys of a ``kind`` node that are no option of its plugin."""
    return NODE_KEYS.get(kind, ("plugin",))


def raw_plugin_nodes(raw: dict) -> list[tuple[str, tuple, Any]]:
    """(kind, yaml path, node) for every plugin node found in a raw recipe."""
    found: list[tuple[str, tuple, Any]] = []
    if isinstance(raw.get("data"), dict):
        found.append(("dataset", ("data",), raw["data"]))
    if isinstance(raw.get("modalities"), dict):
        for m, node in raw["modalities"].items():
            if isinstance(node, dict) and isinstance(node.get("encoder"), dict):
                found.append(("encoder", ("modalities", m, "encoder"), node["encoder"]))
    loss = raw.get("loss")
    if isinstance(loss, dict):
        found.append(("loss", ("loss",), loss))
    elif isinstance(loss, list):
        found += [("loss", ("loss", i), n) for i, n in enumerate(loss) if isinstance(n, dict)]
    if isinstance(raw.get("eval"), list):
        found += [("evaluator", ("eval", i), n) for i, n in enumerate(raw["eval"]) if isinstance(n, dict)]
    if isinstance(raw.get("logging"), list):
        found += [("logger", ("logging", i), n) for i, n in enumerate(raw["logging"]) if isinstance(n, dict)]
    return found


def check_node(kind: str, loc: tuple, node: dict, plugins: Plugins,
               context: dict[str, Any] | None) -> tuple[list[tuple[str, str]], dict | None]:
    """The problems of one plugin node, and the node with every default of its plugin filled in
    (None where it has problems); ``context`` reaches the plugin's validators as ``info.context``."""
    name = node.get("plugin")
    if not isinstance(name, str):
        return [], None  # reported by the recipe's schema
    try:
        comp = plugins.registry.get(kind, name)
    except PluginError:
        return [(yaml_path(loc + ("plugin",)),
                 unknown_name_message(kind, name, plugins.registry.names(kind)) + failed_note(plugins))], None
    reserved = node_keys(kind)
    options = {k: v for k, v in node.items() if k not in reserved}
    problems: list[tuple[str, str]] = []
    resolved = None
    try:
        validated = comp.make_config(options, context).model_dump(mode="json")
        resolved = {**{k: node[k] for k in reserved if k in node}, **validated}
    except ValidationError as exc:
        problems += pydantic_problems(exc, loc, models={(): comp.config})
    problems += unknown_options(comp.config, options, loc, kind, name)
    reported = {path for path, _ in problems}
    problems += [p for p in non_finite(options, loc) if p[0] not in reported]
    return problems, resolved if not problems else None


def non_finite(value: Any, loc: tuple) -> list[tuple[str, str]]:
    """A problem for every NaN or infinite number among a plugin node's options (as the recipe's own
    sections refuse them): no option of a plugin means anything at infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return [(yaml_path(loc), f"must be a finite number, got {value}")]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in non_finite(v, loc + (k,))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in non_finite(v, loc + (i,))]
    return []


def failed_note(plugins: Plugins) -> str:
    """A note naming the plugins that failed to load (one of them may provide the name)."""
    failed = [f"{i.distribution} ({i.name}): {i.error}" for i in plugins.loaded if i.error]
    return f". Note: {len(failed)} plugin(s) failed to load: {'; '.join(failed)}" if failed else ""


def unknown_options(config: type[BaseModel], options: dict, loc: tuple, kind: str,
                    name: str) -> list[tuple[str, str]]:
    """Options a plugin's config model would silently ignore (models that neither forbid nor
    explicitly allow extra keys): a typo must not pass unnoticed."""
    if config.model_config.get("extra") in ("forbid", "allow"):
        return []
    known = set(config.model_fields) | {f.alias for f in config.model_fields.values() if f.alias}
    return [(yaml_path(loc + (k,)), f"unknown option for {kind} {name!r}; its options are: "
                                    f"{', '.join(sorted(config.model_fields)) or '(none)'}")
            for k in options if k not in known]
