"""The plugin manager: built-ins and entry-point plugins, POLYALIGN_PLUGINS, listing."""

from __future__ import annotations

import difflib
import functools
import importlib.metadata as md
import os
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError
from .registry import KINDS, Registry

GROUP = "polyalign"
BUILTIN_DIST = "polyalign"
_REGISTER_HOOKS = {"encoder": "register_encoders", "loss": "register_losses",
                   "dataset": "register_datasets", "evaluator": "register_evaluators",
                   "logger": "register_loggers"}


@dataclass
class PluginInfo:
    """A loaded (or failed) plugin, for ``polyalign plugins``."""

    name: str
    distribution: str
    version: str
    builtin: bool
    error: str | None = None


@dataclass
class Plugins:
    """A plugin manager together with the registry its registration hooks filled."""

    pm: pluggy.PluginManager
    registry: Registry
    loaded: list[PluginInfo] = field(default_factory=list)

    def build(self, kind: str, name: str, context: dict[str, Any] | None = None,
              **config: Any) -> Any:
        """Validate ``config`` with the component's model and create it."""
        comp = self.registry.get(kind, name)
        return comp.create(comp.make_config(config), **(context or {}))


def _allowed_external() -> set[str] | None:
    """Names from POLYALIGN_PLUGINS (None = load every external plugin)."""
    raw = os.environ.get("POLYALIGN_PLUGINS")
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


def _entry_points() -> list[md.EntryPoint]:
    return sorted(md.entry_points(group=GROUP), key=lambda ep: (ep.dist.name if ep.dist else "", ep.name))


def make_plugins(extra: list[Any] = ()) -> Plugins:
    """A fresh plugin manager: built-ins, allowed entry-point plugins, then ``extra`` objects."""
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    allowed = _allowed_external()
    loaded: list[PluginInfo] = []
    by_pm_name: dict[str, PluginInfo] = {}
    for ep in _entry_points():
        dist = ep.dist.name if ep.dist else "?"
        version = ep.dist.version if ep.dist else "?"
        builtin = dist == BUILTIN_DIST
        if not builtin and allowed is not None and ep.name not in allowed and dist not in allowed:
            continue
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not take down the others
            loaded.append(PluginInfo(ep.name, dist, version, builtin,
                                     error=f"failed to import {ep.value!r}: {type(exc).__name__}: {exc}"))
            continue
        try:
            pm.register(obj, name=f"{dist}:{ep.name}")
        except pluggy.PluginValidationError as exc:  # a hook with arguments the spec does not have
            loaded.append(PluginInfo(ep.name, dist, version, builtin, error=f"invalid hook: {exc}"))
            continue
        loaded.append(PluginInfo(ep.name, dist, version, builtin))
        by_pm_name[f"{dist}:{ep.name}"] = loaded[-1]
    if not any(info.builtin for info in loaded):
        raise PluginError("polyalign's built-in plugins were not found: the package is not "
                          "installed. Run `pip install -e .` in the repository.")
    for obj in extra:
        name = getattr(obj, "__name__", type(obj).__name__)
        while pm.has_plugin(name):
            name += "_"
        pm.register(obj, name=name)
        loaded.append(PluginInfo(name, "(registered in code)", "", False))
        by_pm_name[name] = loaded[-1]
    _drop_misspelt_hooks(pm, by_pm_name)
    return Plugins(pm, _fill_registry(pm, by_pm_name), loaded)


def _drop_misspelt_hooks(pm: pluggy.PluginManager, infos: dict[str, PluginInfo]) -> None:
    """``check_pending``: an entry-point plugin implementing a hook that does not exist (a typo)
    is unloaded and reported; in code (``extra``) it is an error."""
    while True:
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin)
            info = infos.get(name)
            message = f"{exc}{_closest_hook(pm, exc.plugin)}"
            if info is None or info.distribution == "(registered in code)":
                raise PluginError(f"plugin {name!r}: {message}") from None
            pm.unregister(exc.plugin)
            info.error = f"not loaded: {message}"


def _closest_hook(pm: pluggy.PluginManager, plugin: Any) -> str:
    """'; did you mean register_encoders?' for a plugin's hook that has no spec, else ''."""
    specs = [caller.name for caller in vars(pm.hook).values() if getattr(caller, "spec", None) is not None]
    for caller in pm.get_hookcallers(plugin) or []:
        if caller.spec is None:
            close = difflib.get_close_matches(caller.name, specs, n=1)
            if close:
                return f"; did you mean {close[0]}?"
    return ""


def _fill_registry(pm: pluggy.PluginManager, infos: dict[str, PluginInfo] | None = None) -> Registry:
    """Call every registration hook; one that raises is reported on its plugin (its components
    are left out) without stopping the others."""
    registry = Registry()
    infos = infos or {}
    for kind, hook_name in _REGISTER_HOOKS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            calls: list[tuple[tuple, dict]] = []
            try:
                impl.function(register=lambda *a, _calls=calls, **k: _calls.append((a, k)))
            except Exception as exc:
                info = infos.get(impl.plugin_name)
                if info is None:
                    raise
                info.error = f"{hook_name} failed: {type(exc).__name__}: {exc}"
                continue
            for args, kwargs in calls:
                try:
                    registry.add(kind, impl.plugin_name, *args, **kwargs)
                except TypeError as exc:
                    raise PluginError(f"plugin {impl.plugin_name!r}: bad call in {hook_name}: {exc}; the form is "
                                      f"register(name, factory, config=Model, help='...', "
                                      f"requires={{module: what to pip install}})") from None
    return registry


@functools.lru_cache(maxsize=1)
def default_plugins() -> Plugins:
    """The process-wide plugins (built once; tests may call ``default_plugins.cache_clear()``)."""
    return make_plugins()


def describe(plugins: Plugins) -> dict[str, Any]:
    """A JSON-ready listing of loaded plugins and every registered component."""
    return {
        "plugins": [info.__dict__ for info in plugins.loaded],
        **{_REGISTER_HOOKS[kind][len("register_"):]: [{"name": c.name, "plugin": c.plugin, "help": c.help,
                                                       "requires": dict(c.requires)}
                        for c in plugins.registry.components(kind)] for kind in KINDS},
    }
