"""The feature cache for frozen towers (recipe ``cache.features: true``).

For every encoder whose parameters are all frozen (``freeze: true``), its output is computed
once per value of the train and val splits (eval mode, no gradient; the evaluation ``finish``,
so no augmentation) and stored under ``cache.dir/features/<encoder>-<hash>/``, keyed by the
value (as the input cache) and by everything the feature depends on besides it: every option of the
encoder, its weights, the library versions (:mod:`polyalign.training.cache_key`). Training then loads those
features instead of raw values, and the model runs only its trainable parts on them (the heads,
the unfrozen encoders): the setup of the Symile paper's M3 experiments. ``polyalign cache
RECIPE`` fills the cache ahead of time; ``polyalign train`` fills what is missing first.

Checkpoints hold the whole model, frozen towers included, so evaluation, ``embed`` and
``search`` run the towers on raw values as usual (and give the embeddings training saw).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from polyalign.core.assemble import Assembled
from polyalign.core.data import DataError, describe_value
from polyalign.core.encoder import Encoder, to_device
from polyalign.core.recipe import Recipe

from .cache_key import options_key
from .input_cache import SPLITS, cache_dir, split_values, value_key
from .tensor_store import TensorStore


def frozen_modalities(parts: Assembled) -> list[str]:
    """The modalities whose encoder has parameters and none of them trains."""
    return [m for m, enc in parts.model.encoders.items()
            if any(True for _ in enc.parameters()) and not any(p.requires_grad for p in enc.parameters())]


def feature_stores(recipe: Recipe, parts: Assembled) -> dict[str, TensorStore]:
    """The feature store of each frozen modality (none unless ``cache.features``)."""
    if not recipe.cache.features:
        return {}
    return {m: TensorStore(cache_dir(recipe, "features") /
                           options_key(recipe.modalities[m].encoder, parts.model.encoders[m], "features"))
            for m in frozen_modalities(parts)}


@torch.no_grad()
def fill_features(recipe: Recipe, parts: Assembled, stores: dict[str, TensorStore], device: torch.device,
                  show_progress: bool = True) -> dict[str, int]:
    """Compute the features missing from each store (train and val splits); return how many
    were computed per modality."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    root, batch_size, done = parts.dataset.root, recipe.train.batch_size, {}
    skip = getattr(parts.dataset, "on_error", "raise") == "skip"  # a value that fails is left out (and its row)
    with Progress(TextColumn("features {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), disable=not show_progress, transient=False) as bar:
        for m, store in stores.items():
            encoder = parts.model.encoders[m]
            was_training = encoder.training
            encoder.eval().to(device)
            done[m] = 0
            try:
                for split in SPLITS:
                    if not len(parts.dataset.split(split)):
                        continue
                    task = bar.add_task(f"{m} ({split})", total=len(parts.dataset.split(split)))
                    pending: dict[str, tuple[str, Any]] = {}
                    for where, value in split_values(parts, split, m):
                        bar.advance(task)
                        key = value_key(value, root)
                        if key not in pending and store.get(key) is None:
                            pending[key] = (where, value)
                        if len(pending) >= batch_size:
                            done[m] += encode_into(encoder, m, pending, root, store, device, skip)
                    done[m] += encode_into(encoder, m, pending, root, store, device, skip)
            finally:
                encoder.train(was_training)
    return done


def encode_into(encoder: Encoder, modality: str, pending: dict[str, tuple[str, Any]], root: Path | None,
                store: TensorStore, device: torch.device, skip: bool = False) -> int:
    """Run the (eval-mode) encoder on the pending values, store the features, clear ``pending``;
    with ``skip`` a value that fails to load is left out (training then skips its row)."""
    keys, loaded = [], []
    for key, (where, value) in pending.items():
        try:
            loaded.append(encoder.load(value, root))
            keys.append(key)
        except Exception as exc:
            if not skip:
                raise DataError(f"{where}, modality {modality!r} ({describe_value(value)}): filling the "
                                f"feature cache: {exc}") from exc
    pending.clear()
    if not loaded:
        return 0
    features = encoder(to_device(encoder.collate(loaded), device)).float().cpu()
    for key, row in zip(keys, features):
        store.put(key, row.clone())
    store.flush()
    return len(keys)


class FeatureLookup:
    """A modality's loader that returns the cached feature of a value instead of loading it."""

    def __init__(self, store: TensorStore, modality: str, width: int):
        self.store, self.modality, self.width = store, modality, width

    def __call__(self, value: Any, root: Path | None) -> torch.Tensor:
        feature = self.store.get(value_key(value, root))
        if feature is None:
            raise DataError(f"not in the feature cache of {self.modality!r} ({self.store.folder}): the value "
                            f"is new or its file changed since the cache was filled; run `polyalign cache "
                            f"RECIPE` (or train again, which fills it first)")
        if not isinstance(feature, torch.Tensor) or feature.shape != (self.width,) or not feature.is_floating_point():
            found = (f"a {tuple(feature.shape)} {feature.dtype} tensor" if isinstance(feature, torch.Tensor)
                     else f"the fields {', '.join(sorted(feature))}")
            raise DataError(f"the feature cache of {self.modality!r} ({self.store.folder}) holds {found} for this "
                            f"value, where the encoder gives {self.width} floating-point numbers: the cache was "
                            f"written by something else or damaged; delete that folder and run `polyalign cache "
                            f"RECIPE` (or train again, which fills it first)")
        return feature
