"""polyalign: contrastive representation learning over any number of modalities."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import polyalign.openmp_wait  # noqa: F401 - before the first import of torch
from polyalign.core.hookspecs import hookimpl
from polyalign.core.recipe import Recipe, load_recipe
from polyalign.evaluation.evaluate import evaluate
from polyalign.inference.trained import TrainedModel, load
from polyalign.run import train

__version__ = version("polyalign")  # pyproject.toml is the one place the version is set


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
