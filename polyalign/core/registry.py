"""Named components: a factory, its pydantic config model and a help line, per kind."""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from pydantic import BaseModel, ConfigDict

from .errors import PluginError, shown

KINDS = ("encoder", "loss", "dataset", "evaluator", "logger")

# The context arguments polyalign offers each kind's factory, besides its config (see hookspecs.py).
CONTEXT: dict[str, tuple[str, ...]] = {
    "encoder": ("modality", "example", "root"),
    "loss": ("modalities", "embed_dim", "batch_size"),
    "dataset": ("seed",),
    "evaluator": (),
    "logger": ("run_dir",),
}


class NoConfig(BaseModel):
    """Config model for components that take no options."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Component:
    """One registered component."""

    kind: str
    name: str
    factory: Callable[..., Any]
    config: type[BaseModel]
    help: str
    plugin: str
    requires: Mapping[str, str] = field(default_factory=dict)  # importable module -> what to pip install

    def make_config(self, options: dict[str, Any], context: dict[str, Any] | None = None) -> BaseModel:
        """Validate ``options`` with this component's config model (raises ValidationError);
        ``context`` (:meth:`polyalign.core.recipe_schema.Recipe.plugin_context`) reaches its validators
        as ``info.context``."""
        return self.config.model_validate(options, context=context)

    def create(self, config: BaseModel, **context: Any) -> Any:
        """Call the factory with ``config`` and the context arguments it accepts."""
        try:
            params = inspect.signature(self.factory).parameters
        except (TypeError, ValueError):  # a callable without a signature: give it everything
            return self.factory(config, **context)
        self._check_context(params, context)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            context = {k: v for k, v in context.items() if k in params}
        return self.factory(config, **context)

    def _check_context(self, params: Mapping[str, inspect.Parameter], context: dict[str, Any]) -> None:
        """A factory naming an argument that polyalign never gives, or needing one this call lacks,
        is an error naming the factory and the valid context arguments."""
        valid = CONTEXT[self.kind]
        named = [p for p in list(params.values())[1:]
                 if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
        where = f"{self.kind} {self.name!r} (plugin {self.plugin!r}): its factory " \
                f"{getattr(self.factory, '__qualname__', repr(self.factory))}"
        for p in named:
            if p.name not in valid:
                close = difflib.get_close_matches(p.name, valid, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else "."
                raise PluginError(f"{where} asks for {p.name!r}, which polyalign does not provide{hint} The context "
                                  f"arguments of {self.kind} factories are: {', '.join(valid) or '(none)'} "
                                  f"(the first argument is the validated config)")
            if p.default is inspect.Parameter.empty and p.name not in context:
                raise PluginError(f"{where} needs the context argument {p.name!r}, which was not given; pass it "
                                  f"(e.g. polyalign.build({self.kind!r}, {self.name!r}, {p.name}=...)) or give it a "
                                  f"default")


class Registry:
    """All components, keyed by kind then name."""

    def __init__(self) -> None:
        self._items: dict[str, dict[str, Component]] = {k: {} for k in KINDS}

    def add(self, kind: str, plugin: str, name: str, factory: Callable[..., Any],
            config: type[BaseModel] | None = None, help: str = "", requires: Mapping[str, str] | None = None) -> None:
        """Register ``name``; a name already taken is an error naming both plugins. ``requires`` maps each
        module the component imports when it runs, beyond polyalign's own dependencies, to what installs it."""
        if requires is not None and not (isinstance(requires, Mapping) and all(
                isinstance(k, str) and isinstance(v, str) and k and v for k, v in requires.items())):
            raise PluginError(f"plugin {plugin!r}: requires for {kind} {name!r} must map module names to what "
                              f"to pip install, e.g. {{'sklearn': 'scikit-learn'}}; got {requires!r}")
        if config is not None and not (isinstance(config, type) and issubclass(config, BaseModel)):
            raise PluginError(f"plugin {plugin!r}: config for {kind} {name!r} must be a pydantic "
                              f"BaseModel subclass, got {config!r}")
        existing = self._items[kind].get(name)
        if existing is not None:
            raise PluginError(
                f"{kind} {name!r} is registered twice: by plugin {existing.plugin!r} and by "
                f"plugin {plugin!r}. Rename one, or disable one plugin with POLYALIGN_PLUGINS.")
        self._items[kind][name] = Component(kind, name, factory, config or NoConfig,
                                            help.strip().splitlines()[0] if help.strip() else "",
                                            plugin, dict(requires or {}))

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
