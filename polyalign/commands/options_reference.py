"""The options of registered components, read from their pydantic config models: name, type,
default, constraints and description. ``polyalign plugins NAME`` prints them; the documentation
site has a page per kind made from them (docs/options_pages.py)."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from polyalign.core.registry import Component

_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="), ("multiple_of", "multiple of"),
           ("min_length", "length >="), ("max_length", "length <="), ("pattern", "matches"))
KIND_TITLES = {"encoder": "Encoders", "loss": "Losses", "dataset": "Datasets", "evaluator": "Evaluators",
               "logger": "Loggers"}


@dataclass(frozen=True)
class Option:
    """One option of a component, as text."""

    name: str
    type: str
    default: str
    constraints: str
    description: str


def type_text(annotation: Any) -> str:
    """A readable type: ``int | None``, ``'raise' | 'skip'``, ``list[int > 0]``, a model's class name."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "None"
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin is typing.Annotated:
        bounds = constraint_text(list(annotation.__metadata__))
        return type_text(args[0]) + (f" {bounds}" if bounds else "")
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(type_text(a) for a in args)}]" if args else name
    if annotation is Any:
        return "any"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def constraint_text(metadata: list[Any]) -> str:
    """``>= 0, < 1`` from a field's annotated-types metadata."""
    parts = []
    for item in metadata:
        for attr, word in _BOUNDS:
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{word} {value}")
    return ", ".join(parts)


def default_text(field: FieldInfo) -> str:
    """The default as YAML would write it; ``required`` when there is none."""
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default is PydanticUndefined else field.default  # type: ignore[call-arg]
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value) if not isinstance(value, str) else repr(value)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (``LoraOptions | None``, ``list[Source]``...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in typing.get_args(annotation) for m in _models_in(a)]


def options(config: type[BaseModel], prefix: str = "") -> list[Option]:
    """The options of a config model in declaration order, each nested model's after its own
    option (named ``lora.rank``)."""
    found = []
    for name, f in config.model_fields.items():
        found.append(Option(prefix + name, type_text(f.annotation), default_text(f), constraint_text(f.metadata),
                            " ".join((f.description or "").split())))
        for model in _models_in(f.annotation):
            found += options(model, f"{prefix}{name}.")
    return found


def component_lines(comp: Component) -> list[str]:
    """A component as plain text lines: its kind, name, plugin and help, then one line per option."""
    lines = [f"{comp.kind} {comp.name} (plugin {comp.plugin}): {comp.help}".rstrip(": ")]
    found = options(comp.config)
    if not found:
        return lines + ["  no options"]
    for o in found:
        bounds = f", {o.constraints}" if o.constraints else ""
        default = "(required)" if o.default == "required" else f"= {o.default}"
        lines.append(f"  {o.name}: {o.type} {default}{bounds}" + (f"  -- {o.description}" if o.description else ""))
    return lines


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def component_markdown(comp: Component) -> str:
    """A component's section of the reference: heading, help and a table of its options."""
    lines = [f"## `{comp.name}`", "", comp.help or "(no description)", ""]
    found = options(comp.config)
    if not found:
        return "\n".join(lines + ["No options.", ""])
    lines += ["| option | type | default | constraints | description |", "|---|---|---|---|---|"]
    lines += [f"| `{o.name}` | {_cell(o.type)} | {_cell(o.default)} | {_cell(o.constraints)} | {_cell(o.description)} |"
              for o in found]
    return "\n".join(lines + [""])


def kind_page(kind: str, components: list[Component]) -> str:
    """The reference page of one kind: every component's options."""
    title = KIND_TITLES.get(kind, kind)
    head = [f"# {title}: options", "",
            (f"Every built-in {kind} plugin and its options, read from its pydantic config model (generated; "
             f"`polyalign plugins NAME` prints the same for any installed plugin). Give them in the recipe's "
             f"`{{plugin: NAME, ...}}` node."), ""]
    return "\n".join(head) + "\n" + "\n".join(component_markdown(c) for c in components)
