"""``polyalign cache RECIPE``: fill a recipe's disk caches ahead of training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from polyalign.core.assemble import assemble
from polyalign.core.device import pick_device
from polyalign.core.errors import PolyalignError
from polyalign.core.plugin_manager import Plugins, default_plugins
from polyalign.core.recipe import Recipe
from polyalign.core.stream import is_stream

from .feature_cache import feature_stores, fill_features
from .input_cache import fill_inputs, input_stores
from .loaders import first_values


@dataclass
class Filled:
    """One cache folder after filling: its kind, modality, entries computed now and in all."""

    kind: str
    modality: str
    folder: Path
    computed: int
    entries: int


def fill_caches(recipe: Recipe, plugins: Plugins | None = None, show_progress: bool = True) -> list[Filled]:
    """Compute what the recipe's feature cache (``cache.features``) and disk input cache
    (``cache.inputs: disk``) lack for the train and val splits."""
    if not recipe.cache.features and recipe.cache.inputs != "disk":
        raise PolyalignError("the recipe has no disk cache to fill: set cache.features=true (frozen encoders) "
                             "and/or cache.inputs=disk")
    parts = assemble(recipe, plugins or default_plugins())
    filled = []
    features = feature_stores(recipe, parts)
    if recipe.cache.features and not features:
        raise PolyalignError("cache.features: no encoder of this recipe is frozen (freeze: true), so there are "
                             "no features to cache")
    if features:
        device = pick_device(recipe.train.device)
        parts.model.to(device)
        counts = fill_features(recipe, parts, features, device, show_progress)
        filled += [Filled("features", m, s.folder, counts[m], len(s)) for m, s in features.items()]
    if recipe.cache.inputs == "disk":
        rest = {m: enc for m, enc in parts.model.encoders.items() if m not in features}
        stores = input_stores(recipe, rest, first_values(parts, list(rest)), parts.dataset.root,
                              is_stream(parts.dataset.split("train")))
        counts = fill_inputs(recipe, parts, stores, show_progress)
        filled += [Filled("inputs", m, s.folder, counts[m], len(s)) for m, s in stores.items()]  # type: ignore[union-attr]
    return filled
