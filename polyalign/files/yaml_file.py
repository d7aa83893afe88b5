"""Reading YAML that may be hostile: only plain values (``safe_load``), and a bounded size.

A YAML file is small but its aliases can make it expand without limit (a list of aliases to one
long string, or aliases of aliases), and every place that reads one (a recipe, a run's or an
export's ``recipe.yaml``, a model card, a ``--add`` value, an override) gets the same bounds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from polyalign.core.errors import PolyalignError, cut, shown

MAX_TEXT_CHARS = 1_000_000
"""Characters of YAML text (and bytes of a YAML file) read at most."""

MAX_DEPTH = 64
"""Nesting levels of mappings and lists."""

MAX_NODES = 100_000
"""Values in the loaded tree, counting an alias each time it is used."""

MAX_EXPANDED_CHARS = 1_000_000
"""Characters of all strings (keys and values) in the loaded tree, counting an alias each time it is used."""

MAX_INT_BITS = 64
"""An integer with more bits is not a setting (and printing it can fail: Python limits int-to-str)."""


class YamlError(PolyalignError):
    """YAML that cannot be read or is too large; ``path`` is where in the tree ('' = the whole file)."""

    def __init__(self, source: str, path: str, reason: str):
        self.source, self.path, self.reason = source, path, reason
        super().__init__(f"{source}: {path + ': ' if path else ''}{reason}")


def _path(loc: tuple) -> str:
    return ".".join(cut(str(p), 60) for p in loc)


def check_tree(raw: Any) -> tuple[str, str] | None:
    """The first problem with the shape of a loaded YAML tree, as (path, reason), or None: a value
    that contains itself, nesting deeper than MAX_DEPTH, more than MAX_NODES values or
    MAX_EXPANDED_CHARS characters once aliases are expanded, or an integer of more than MAX_INT_BITS bits."""
    nodes = chars = 0
    stack: list[tuple[Any, tuple, frozenset]] = [(raw, (), frozenset())]
    while stack:
        node, loc, ancestors = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            return _path(loc[:1]), (f"more than {MAX_NODES} values (YAML aliases count each time they are "
                                    f"used); this is meant to be a small configuration file")
        if isinstance(node, (str, bytes)):
            chars += len(node)
            if chars > MAX_EXPANDED_CHARS:
                return _path(loc[:1]), (f"more than {MAX_EXPANDED_CHARS} characters of text once YAML aliases "
                                        f"are expanded; this is meant to be a small configuration file")
            continue
        if isinstance(node, int) and not isinstance(node, bool) and node.bit_length() > MAX_INT_BITS:
            return _path(loc), f"an integer of {node.bit_length()} bits is too large to be a setting"
        if not isinstance(node, (dict, list)):
            continue
        if id(node) in ancestors:
            return _path(loc), "this value contains itself (a YAML alias that refers to its own anchor)"
        if len(loc) >= MAX_DEPTH:
            return _path(loc[:1]), f"nested more than {MAX_DEPTH} levels deep"
        inner = ancestors | {id(node)}
        if isinstance(node, dict):
            for k, v in node.items():
                where = loc + (k if isinstance(k, str) else shown(k),)
                stack += [(k, where, inner), (v, where, inner)]
        else:
            stack.extend((v, loc + (i,), inner) for i, v in enumerate(node))
    return None


def parse_yaml(text: str, source: str) -> Any:
    """The plain values of YAML ``text`` (from ``source``, named in errors), within the bounds above."""
    if len(text) > MAX_TEXT_CHARS:
        raise YamlError(source, "", f"{len(text)} characters is too long (at most {MAX_TEXT_CHARS}); this is "
                                    f"meant to be a small configuration file")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise YamlError(source, "", f"not valid YAML: {cut(str(exc), 600)}") from None
    except RecursionError:
        raise YamlError(source, "", f"nested too deeply (more than {MAX_DEPTH} levels are refused)") from None
    except (ValueError, TypeError, OverflowError) as exc:  # a tagged value that does not parse (!!int abc)
        raise YamlError(source, "", f"a value cannot be read: {cut(str(exc), 300)}") from None
    problem = check_tree(raw)
    if problem is not None:
        raise YamlError(source, *problem)
    return raw


def read_yaml(path: str | Path) -> Any:
    """The YAML file at ``path`` read through :func:`parse_yaml`; errors name the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_TEXT_CHARS:
            raise YamlError(str(path), "", f"a file of {size} bytes is too large (at most {MAX_TEXT_CHARS}); "
                                           f"this is meant to be a small configuration file")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise YamlError(str(path), "", f"not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise YamlError(str(path), "", f"cannot read the file: {exc.strerror or exc}") from None
    return parse_yaml(text, str(path))
