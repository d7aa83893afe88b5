"""A configuration of a sweep named by its grid values (``loss=clip``, ``train.lr=0.01, loss.plugin=symile``)
or by its label as ``polyalign compare`` prints it, not by its folder under ``runs/``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from polyalign.core.errors import PolyalignError, shown

from .plan import read_plan, split_values, sweep_groups


def plain(value: Any) -> Any:
    """A grid value in the form values are compared in: a plugin node without options is its plugin's name
    (``{plugin: clip}`` is ``clip``), lists and mappings element by element."""
    if isinstance(value, dict):
        if set(value) == {"plugin"}:
            return plain(value["plugin"])
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def parsed(text: str) -> Any:
    """An override's value as YAML reads it (the text itself when it is not YAML)."""
    try:
        return plain(yaml.safe_load(text))
    except yaml.YAMLError:
        return text


def grid_pairs(text: str) -> dict[str, str]:
    """``KEY=V, KEY2=V2`` -> {KEY: V, ...} (commas inside brackets, braces and quotes do not split)."""
    pairs = {}
    for item in split_values(text):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise PolyalignError(f"{shown(text)}: name a configuration by its grid values, KEY=VALUE[, KEY=VALUE] "
                                 f"(e.g. 'loss.plugin=clip'), or by its label as `polyalign compare` prints it")
        pairs[key.strip()] = value.strip()
    return pairs


def configuration(sweep_dir: str | Path, selector: str) -> tuple[str, list[Path]]:
    """The label and run directories of the one configuration of the sweep that ``selector`` names: its label,
    or grid values (``KEY=VALUE``, compared as YAML values; grid keys not given may take any value)."""
    groups = sweep_groups(sweep_dir)
    if selector in groups:
        return selector, groups[selector]
    plan = read_plan(Path(sweep_dir))
    wanted = grid_pairs(selector)
    unknown = [k for k in wanted if k not in plan.grid]
    if unknown:
        raise PolyalignError(f"{sweep_dir}: {', '.join(unknown)} is not a key of the sweep's grid (its keys: "
                             f"{', '.join(plan.grid) or 'none'}); name a configuration by KEY=VALUE of the grid")
    overrides = {", ".join(spec.overrides) or "base": dict(o.split("=", 1) for o in spec.overrides)
                 for spec in plan.runs}
    found = [label for label, values in overrides.items()
             if all(parsed(values[k]) == parsed(v) for k, v in wanted.items())]
    if len(found) != 1:
        what = "no configuration" if not found else f"{len(found)} configurations ({'; '.join(found)})"
        raise PolyalignError(f"{sweep_dir}: {shown(selector)} names {what}; its configurations: "
                             f"{'; '.join(overrides)}" + ("; give a value of each grid key" if found else ""))
    return found[0], groups.get(found[0], [])
