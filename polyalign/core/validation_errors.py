"""Pydantic's errors as (YAML path, message) pairs for people: the path dotted, the closest valid key named."""

from __future__ import annotations

import difflib
import re

from pydantic import BaseModel, ValidationError

from .errors import cut


def yaml_path(loc: tuple | list) -> str:
    """``("loss", 0, "weight")`` -> ``loss.0.weight`` (each part cut to 60 characters)."""
    return ".".join(cut(str(p), 60) for p in loc)


def unknown_key_hint(err: dict, models: dict[tuple, type[BaseModel]]) -> str:
    """For an unknown key: the closest valid key of the section it is in, or all of them."""
    if err["type"] != "extra_forbidden":
        return ""
    model = models.get(tuple(err["loc"][:-1]))
    if model is None:
        return ""
    fields = list(model.model_fields)
    close = difflib.get_close_matches(str(err["loc"][-1]), fields, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(fields)}"


def pydantic_problems(exc: ValidationError, prefix: tuple = (), models: dict[tuple, type[BaseModel]] | None = None,
                      tags: dict[str, int] | None = None) -> list[tuple[str, str]]:
    """(yaml path, message) per pydantic error under ``prefix``. ``models`` maps a location to the model
    whose keys an unknown key there is compared with; ``tags`` maps a section to the position of the
    tag its discriminated union adds to a location (left out of the path)."""
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        at = (tags or {}).get(str(loc[0])) if loc else None
        if at is not None and len(loc) > at:
            loc = loc[:at] + loc[at + 1:]
        message = re.sub(r" or instance of \w+|^Value error, ", "", err["msg"])
        problems.append((yaml_path(prefix + loc), message + unknown_key_hint({**err, "loc": loc}, models or {})))
    return problems
