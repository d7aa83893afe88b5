"""The model card of an exported model: the plugins it needs, and the check made on loading."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from polyalign.core.errors import PluginError, PolyalignError, shown
from polyalign.core.plugin_manager import Plugins, describe
from polyalign.core.recipe import Recipe
from polyalign.files.yaml_file import parse_yaml

CARD_FILE = "MODEL_CARD.md"
_LISTING_KEY = {"encoder": "encoders", "loss": "losses"}


def _installed(plugins: Plugins) -> dict[tuple[str, str], dict[str, str]]:
    """(kind, name) -> plugin, distribution and version of every registered encoder and loss."""
    listing = describe(plugins)
    origin = {}
    for info in listing["plugins"]:
        origin[f"{info['distribution']}:{info['name']}"] = info  # entry-point plugins
        origin.setdefault(info["name"], info)  # plugins registered in code
    found = {}
    for kind, key in _LISTING_KEY.items():
        for comp in listing[key]:
            info = origin.get(comp["plugin"], {})
            found[(kind, comp["name"])] = {"plugin": comp["plugin"],
                                           "distribution": info.get("distribution", "?"),
                                           "version": info.get("version", "?")}
    return found


def requirements(recipe: Recipe, plugins: Plugins) -> list[dict[str, str]]:
    """The encoder and loss plugins a model of ``recipe`` needs, with where they come from."""
    installed = _installed(plugins)
    needed = [("encoder", node.encoder.plugin) for node in recipe.modalities.values()]
    needed += [("loss", node.plugin) for node in recipe.losses]
    return [{"kind": kind, "name": name, **installed[(kind, name)]} for kind, name in dict.fromkeys(needed)]


def front_matter(text: str) -> str:
    """The YAML between the opening ``---`` lines of a Markdown file ('' if there is none)."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return ""
    for i, line in enumerate(lines[1:], start=1):
        if line.strip() == "---":
            return "\n".join(lines[1:i])
    return ""


def read_card(path: Path) -> dict[str, Any]:
    """The machine-readable header (YAML front matter) of a model card."""
    try:
        header = parse_yaml(front_matter(Path(path).read_text(encoding="utf-8")), f"{path} (its header)")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolyalignError(f"cannot read the model card {path}: {exc}") from None
    requires = header.get("requires") if isinstance(header, dict) else None
    if not isinstance(requires, list):
        raise PolyalignError(f"{path} has no polyalign header (YAML front matter with `requires:`); "
                             f"was the folder written by `polyalign export`?")
    bad = [i for i, r in enumerate(requires) if not isinstance(r, dict) or not all(isinstance(r.get(k), str) for k in (
        "kind", "name")) or not all(isinstance(r.get(k, ""), str) for k in ("plugin", "distribution", "version"))]
    if bad:
        raise PolyalignError(f"{path}: requires.{bad[0]} is {shown(requires[bad[0]])}; each entry of `requires:` "
                             f"must be a mapping of text: kind, name, plugin, distribution, version. Export "
                             f"the model again with `polyalign export`.")
    return header


def check_card(path: Path, plugins: Plugins) -> dict[str, Any]:
    """Refuse a card whose plugins are not installed, naming them; warn on other versions."""
    header = read_card(path)
    installed = _installed(plugins)
    missing, other = [], []
    for req in header["requires"]:
        have = installed.get((req["kind"], req["name"]))
        source = f"{req.get('distribution', '?')} {req.get('version', '?')}"
        if have is None:
            missing.append(f"{req['kind']} {req['name']!r} (from {source})")
        elif have["distribution"] == req.get("distribution") and have["version"] != req.get("version"):
            other.append(f"{req['kind']} {req['name']!r}: exported with {source}, installed {have['version']}")
    if missing:
        pins = sorted({f"{r['distribution']}=={r.get('version', '?')}" for r in header["requires"]
                       if installed.get((r["kind"], r["name"])) is None and r.get("distribution", "?") != "?"})
        hint = f" Install them (pip install {' '.join(pins)})" if pins else " Install the plugins that provide them"
        raise PluginError(f"{path} needs plugins that are not installed: {', '.join(missing)}.{hint} "
                          f"and load the model again; `polyalign plugins` lists what is installed.")
    if other:
        warnings.warn(f"{path}: plugin versions differ from the export: {'; '.join(other)}", stacklevel=3)
    return header
