"""Named components, per kind: each a class carrying its name, options model, description and requirements."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict

from .errors import PluginError, shown

KINDS = ("encoder", "loss", "dataset", "evaluator", "logger")

# The context arguments polyalign offers each kind's class, besides its options (see hookspecs.py).
CONTEXT: dict[str, tuple[str, ...]] = {
    "encoder": ("modality", "example", "root"),
    "loss": ("modalities", "embed_dim", "batch_size"),
    "dataset": ("seed",),
    "evaluator": (),
    "logger": ("run_dir",),
}

SHAPE = ("register(MyClass), where the class has name = 'my_name' (what recipes use), optionally Options = a pydantic "
         "model of its options and requires = {'module': 'what to pip install'}, and a docstring whose first "
         "paragraph describes it")


class NoConfig(BaseModel):
    """Options model of components that take no options."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Component:
    """One registered component: its class and what the class declares."""

    kind: str
    name: str
    cls: type
    config: type[BaseModel]  # the class's ``Options``, or NoConfig
    description: str
    plugin: str

    @property
    def takes_options(self) -> bool:
        """Whether the class is called with its validated options first (it declares ``Options``)."""
        return getattr(self.cls, "Options", None) is not None

    @property
    def requires(self) -> dict[str, str]:
        """Modules the component imports beyond polyalign's dependencies -> what installs each."""
        return dict(getattr(self.cls, "requires", None) or {})

    def requirements(self, config: BaseModel) -> dict[str, str]:
        """What these options need installed: the class's ``requires_for(options)``, else its ``requires``."""
        requires_for = getattr(self.cls, "requires_for", None)
        if requires_for is None:
            return self.requires
        found = requires_for(config)
        _check_requires(found, f"{self.kind} {self.name!r} (plugin {self.plugin!r}): requires_for(options)")
        return dict(found)

    def make_config(self, options: dict[str, Any], context: dict[str, Any] | None = None) -> BaseModel:
        """Validate ``options`` with this component's options model (raises ValidationError);
        ``context`` (:meth:`polyalign.core.recipe_schema.Recipe.plugin_context`) reaches its validators
        as ``info.context``."""
        return self.config.model_validate(options, context=context)

    def create(self, config: BaseModel, **context: Any) -> Any:
        """Call the class with ``config`` (when it declares ``Options``) and the context arguments it accepts."""
        args = (config,) if self.takes_options else ()
        params = inspect.signature(self.cls).parameters
        self._check_context(params, context)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            context = {k: v for k, v in context.items() if k in params}
        return self.cls(*args, **context)

    def _check_context(self, params: Mapping[str, inspect.Parameter], context: dict[str, Any]) -> None:
        """An ``__init__`` naming an argument that polyalign never gives, or needing one this call lacks,
        is an error naming the class and the valid context arguments."""
        valid = CONTEXT[self.kind]
        named = [p for p in list(params.values())[1 if self.takes_options else 0:]
                 if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
        where = f"{self.kind} {self.name!r} (plugin {self.plugin!r}): {self.cls.__qualname__}.__init__"
        for p in named:
            if p.name not in valid:
                close = difflib.get_close_matches(p.name, valid, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else "."
                after = " (after the options, its first argument)" if self.takes_options else ""
                raise PluginError(f"{where} asks for {p.name!r}, which polyalign does not provide{hint} The context "
                                  f"arguments of {self.kind} classes are: {', '.join(valid) or '(none)'}{after}")
            if p.default is inspect.Parameter.empty and p.name not in context:
                raise PluginError(f"{where} needs the context argument {p.name!r}, which was not given; pass it "
                                  f"(e.g. polyalign.build({self.kind!r}, {self.name!r}, {p.name}=...)) or give it a "
                                  f"default")


def _check_requires(requires: Any, where: str) -> None:
    if not (isinstance(requires, Mapping) and all(isinstance(k, str) and isinstance(v, str) and k and v
                                                  for k, v in requires.items())):
        raise PluginError(f"{where} must map module names to what to pip install, e.g. {{'sklearn': 'scikit-learn'}}; "
                          f"got {shown(requires)}")


def _takes_a_first_argument(cls: type) -> bool:
    """Whether calling ``cls`` accepts one positional argument (the options)."""
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                  inspect.Parameter.VAR_POSITIONAL)
    return any(p.kind in positional for p in inspect.signature(cls).parameters.values())


def description_of(cls: type) -> str:
    """The first paragraph of the class's own docstring, on one line ('' without one)."""
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    return " ".join(doc.split("\n\n")[0].split())


def component(kind: str, plugin: str, cls: Any) -> Component:
    """The component a registered class declares; anything else is an error saying what to add."""
    if not isinstance(cls, type):
        raise PluginError(f"plugin {plugin!r} registered {shown(cls)} as a {kind}, which is not a class. The form "
                          f"is {SHAPE}.")
    where = f"plugin {plugin!r}: {kind} class {cls.__qualname__}"
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.strip():
        raise PluginError(f"{where} has no name; add the class attribute name = '...' (the name recipes use). "
                          f"The form is {SHAPE}.")
    options = getattr(cls, "Options", None)
    if options is not None and not (isinstance(options, type) and issubclass(options, BaseModel)):
        raise PluginError(f"{where}: Options must be a pydantic BaseModel subclass (or left out: no options), "
                          f"got {shown(options)}")
    if options is not None and not _takes_a_first_argument(cls):
        raise PluginError(f"{where} declares Options but its __init__ takes no argument for them; define "
                          f"__init__(self, options, ...) (polyalign calls {cls.__name__}(options, **context))")
    _check_requires(getattr(cls, "requires", None) or {}, f"{where}: requires")
    if not callable(getattr(cls, "requires_for", lambda options: None)):
        raise PluginError(f"{where}: requires_for must be a classmethod taking the options")
    return Component(kind, name, cls, options or NoConfig, description_of(cls), plugin)


class Registry:
    """All components, keyed by kind then name."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, Component]] = {k: {} for k in KINDS}

    def add(self, kind: str, plugin: str, cls: Any) -> None:
        """Register the class ``cls``; a name already taken is an error naming both plugins."""
        comp = component(kind, plugin, cls)
        existing = self._items[kind].get(comp.name)
        if existing is not None:
            raise PluginError(
                f"{kind} {comp.name!r} is registered twice: by plugin {existing.plugin!r} and by "
                f"plugin {plugin!r}. Rename one, or disable one plugin with POLYALIGN_PLUGINS.")
        self._items[kind][comp.name] = comp

    def get(self, kind: str, name: str) -> Component:
        """The component, or an error listing the available names and the closest match."""
        if kind not in self._items:
            raise PluginError(f"unknown component kind {kind!r}; kinds are: {', '.join(KINDS)}")
        try:
            return self._items[kind][name]
        except KeyError:
            raise PluginError(unknown_name_message(kind, name, self.names(kind))) from None

    def names(self, kind: str) -> list[str]:
        """Sorted names registered for ``kind``."""
        return sorted(self._items[kind])

    def components(self, kind: str) -> list[Component]:
        """Components of ``kind``, sorted by name."""
        return [self._items[kind][n] for n in self.names(kind)]


def unknown_name_message(kind: str, name: Any, available: list[str]) -> str:
    """'unknown loss 'clpi'; did you mean 'clip'? available: ...'."""
    close = difflib.get_close_matches(str(name), available, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    return f"unknown {kind} {shown(name)}{hint} Available: {', '.join(available) or '(none)'}"
