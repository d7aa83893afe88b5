"""``key.path=value`` overrides of a raw recipe, and what a changed ``plugin:`` leaves of its node."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from polyalign.files.yaml_file import YamlError, parse_yaml

from .errors import PluginError, RecipeError, cut, shown
from .plugin_manager import Plugins
from .plugin_nodes import node_keys, raw_plugin_nodes
from .validation_errors import yaml_path


def parse_overrides(overrides: list[str] | None) -> list[tuple[list[str], Any]]:
    """``["train.lr=0.1", ...]`` -> ``[(["train", "lr"], 0.1), ...]`` (values parsed as YAML)."""
    parsed = []
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError("command line", [(shown(item), "an override must look like key.path=value")])
        try:
            value = parse_yaml(raw, "command line") if raw.strip() else ""
        except YamlError as exc:
            raise RecipeError("command line", [(key, f"value {shown(raw)}: {exc.reason}")]) from None
        parsed.append((key.strip().split("."), value))
    return parsed


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    """Set each ``key.path=value`` in ``raw`` (list items by index), creating mappings as needed."""
    for keys, value in parse_overrides(overrides):
        node: Any = raw
        for depth, key in enumerate(keys):
            last = depth == len(keys) - 1
            if isinstance(node, list):
                if not key.isdigit() or int(key) >= len(node):
                    raise RecipeError("command line", [(".".join(keys), f"{'.'.join(keys[:depth]) or 'recipe'} "
                                                        f"is a list of {len(node)}; {key!r} is not an index in it")])
                key = int(key)
            elif not isinstance(node, dict):
                raise RecipeError("command line", [(".".join(keys), f"{'.'.join(keys[:depth])} is not a mapping")])
            if last:
                node[key] = value
            else:
                if isinstance(node, dict) and not isinstance(node.get(key), (dict, list)):
                    node[key] = {}
                node = node[key]
    return raw


def plugin_names(raw: dict) -> dict[tuple, Any]:
    """The ``plugin`` of every plugin node of a raw recipe, by YAML path."""
    return {loc: node.get("plugin") for _, loc, node in raw_plugin_nodes(raw)}


def drop_replaced_plugin_options(old_names: dict[tuple, Any], raw: dict, given: list[tuple[str, ...]],
                                 plugins: Plugins) -> list[str]:
    """Where an override changed a node's ``plugin`` from ``old_names`` (``loss.plugin=clip`` on a
    Symile node with ``negatives:``), drop from ``raw`` the options the new plugin does not take,
    unless the command line set them too (``given`` key paths); return a note per node naming them."""
    notes = []
    for kind, loc, node in raw_plugin_nodes(raw):
        old, new = old_names.get(loc), node.get("plugin")
        at = tuple(str(p) for p in loc)
        if old is None or old == new or at + ("plugin",) not in given or not isinstance(new, str):
            continue
        try:
            config = plugins.registry.get(kind, new).config
        except PluginError:
            continue  # validation names the unknown plugin
        if config.model_config.get("extra") == "allow":
            continue
        reserved = node_keys(kind)
        takes = {*reserved, *config.model_fields, *(f.alias for f in config.model_fields.values() if f.alias)}
        kept = [k for k in node if k not in reserved and (k in takes or at + (str(k),) in given)]
        try:  # an option both plugins take may hold a value only the old one accepts (symile's negatives: n_squared)
            config.model_validate({k: node[k] for k in kept})
            refused = set()
        except ValidationError as exc:
            refused = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
        dropped = {k: node.pop(k) for k in list(node) if (k not in takes or str(k) in refused and k not in reserved)
                   and at + (str(k),) not in given}
        if dropped:
            shown_options = ", ".join(f"{k}: {cut(json.dumps(v, default=str), 60)}" for k, v in dropped.items())
            notes.append(f"{yaml_path(loc)}: plugin changed from {old!r} to {new!r}; dropped the option(s) {new!r} "
                         f"does not take, or not with that value ({shown_options})")
    return notes
