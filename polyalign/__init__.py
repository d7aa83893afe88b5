"""polyalign: contrastive representation learning over any number of modalities."""

from __future__ import annotations

import importlib
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from polyalign.core.hookspecs import hookimpl

if TYPE_CHECKING:
    from polyalign.core.recipe import Recipe, load_recipe
    from polyalign.evaluation.evaluate import evaluate
    from polyalign.inference.trained import TrainedModel, load
    from polyalign.run import train

__version__ = version("polyalign")  # pyproject.toml is the one place the version is set

# The public API is imported on first use, so that `import polyalign` (and `polyalign --help`, a plugin's
# `@polyalign.hookimpl`) does not import torch.
_LAZY = {"Recipe": "polyalign.core.recipe", "load_recipe": "polyalign.core.recipe",
         "evaluate": "polyalign.evaluation.evaluate", "TrainedModel": "polyalign.inference.trained",
         "load": "polyalign.inference.trained", "train": "polyalign.run"}


def __getattr__(name: str) -> Any:
    """The public API's functions and classes, imported when first asked for."""
    if name not in _LAZY:
        raise AttributeError(f"module 'polyalign' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value


def build(kind: str, name: str, **config: Any) -> Any:
    """A registered component at its defaults plus ``config``, e.g. ``build("loss", "clip")``.

    Context arguments a factory accepts (``modalities`` for losses, ``seed`` for datasets,
    ``modality``/``example`` for encoders) may be passed too; they are not config fields.
    """
    from polyalign.core.plugins import default_plugins
    from polyalign.core.registry import CONTEXT

    plugins = default_plugins()
    comp = plugins.registry.get(kind, name)
    fields = set(comp.config.model_fields)
    context_keys = set(CONTEXT[kind]) - fields
    options = {k: v for k, v in config.items() if k not in context_keys}
    context = {k: v for k, v in config.items() if k in context_keys}
    return comp.create(comp.make_config(options), **context)

__all__ = ["Recipe", "TrainedModel", "build", "evaluate", "hookimpl", "load", "load_recipe", "train", "__version__"]
