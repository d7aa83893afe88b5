"""polyalign: contrastive representation learning over any number of modalities."""

from __future__ import annotations

from importlib.metadata import version
from typing import TYPE_CHECKING, Any

import polyalign.openmp_wait  # noqa: F401 - before the first import of torch
from polyalign.core.hookspecs import hookimpl

if TYPE_CHECKING:
    from polyalign.core.recipe import Recipe, load_recipe
    from polyalign.evaluation.evaluate import evaluate
    from polyalign.inference.trained import TrainedModel, load
    from polyalign.run import train

__version__ = version("polyalign")  # pyproject.toml is the one place the version is set

# The public API is imported on first use, so that `import polyalign` (and `polyalign --help`, a plugin's
# `@polyalign.hookimpl`) does not import torch.
def __getattr__(name: str) -> Any:
    """The public API's functions and classes, imported when first asked for."""
    if name in ("Recipe", "load_recipe"):
        from polyalign.core import recipe as module
    elif name == "evaluate":
        from polyalign.evaluation import evaluate as module
    elif name in ("TrainedModel", "load"):
        from polyalign.inference import trained as module
    elif name == "train":
        from polyalign import run as module
    else:
        raise AttributeError(f"module 'polyalign' has no attribute {name!r}")
    value = getattr(module, name)
    globals()[name] = value
    return value


def build(kind: str, name: str, **config: Any) -> Any:
    """A registered component at its defaults plus ``config``, e.g. ``build("loss", "clip")``.

    Context arguments a factory accepts (``modalities`` for losses, ``seed`` for datasets,
    ``modality``/``example`` for encoders) may be passed too; they are not config fields.
    """
    from polyalign.core.plugin_manager import default_plugins
    from polyalign.core.registry import CONTEXT

    plugins = default_plugins()
    comp = plugins.registry.get(kind, name)
    fields = set(comp.config.model_fields)
    context_keys = set(CONTEXT[kind]) - fields
    options = {k: v for k, v in config.items() if k not in context_keys}
    context = {k: v for k, v in config.items() if k in context_keys}
    return comp.create(comp.make_config(options), **context)

__all__ = ["Recipe", "TrainedModel", "build", "evaluate", "hookimpl", "load", "load_recipe", "train", "__version__"]
