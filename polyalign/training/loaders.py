"""The trainer's data: train and validation loaders over map-form or streamed splits, through
the input and feature caches, with a number of DataLoader workers chosen from the machine."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch

from polyalign.core.assemble import HEAD, Assembled
from polyalign.core.batch import Collator
from polyalign.core.data import BatchOf, EpochLoader, EpochSampler, Loader, RowLoader, make_loader
from polyalign.core.encoder import FileBytes
from polyalign.core.errors import PolyalignError
from polyalign.core.recipe import Recipe
from polyalign.core.stream import StreamLoader, StreamTuples, is_stream

from .distributed import DistInfo, barrier
from .feature_cache import FeatureLookup, feature_stores, fill_features
from .input_cache import CachedDecode, MemoryCacheLoader, MemoryStore, cache_dir, cached_collator, input_stores
from .shard_blocks import BlockStream
from .threads import local_processes, usable_cpus

MAX_WORKERS = 8


def default_workers(first: dict[str, Any], streamed: bool) -> int:
    """``train.num_workers: auto``: 0 when the first train tuple holds only numbers (nothing to
    read or decode, so workers would only add overhead); otherwise one per CPU this process may
    use (its affinity and cgroup quota; shared among the processes of this machine,
    ``LOCAL_WORLD_SIZE``), less one for the main process, at most 8."""
    reads = streamed or any(isinstance(v, (str, Path, FileBytes)) for k, v in first.items() if k not in ("label", "id"))
    return reading_workers() if reads else 0


def reading_workers() -> int:
    """``train.num_workers: auto`` for data read from files: this process's share of the usable CPUs less one
    for itself, at most 8."""
    return max(0, min(MAX_WORKERS, usable_cpus() // local_processes() - 1))


def first_values(parts: Assembled, modalities: list[str]) -> dict[str, Any]:
    """One raw train value per modality (the first found among the first samples)."""
    train = parts.dataset.split("train")
    found: dict[str, Any] = {}
    for i, sample in enumerate(train):
        for m in modalities:
            if m not in found and sample.get(m) is not None:
                found[m] = sample[m]
        if len(found) == len(modalities) or i >= HEAD:
            break
    return found


class TrainingData:
    """The loaders of one training process, built from the recipe's data and cache sections.

    ``train`` and ``val`` (or None) yield :class:`~polyalign.core.batch.Batch` objects; ``train``
    also has ``set_epoch(epoch, start_batch, seed)``, ``len`` (batches per epoch) and
    ``take_skipped()``. ``layout`` names what a streamed epoch's order depends on besides the seed
    (processes x workers; empty for map-form data, whose order does not depend on them).
    """

    def __init__(self, recipe: Recipe, parts: Assembled, dist: DistInfo, device: torch.device,
                 show_progress: bool = True):
        cfg = recipe.train
        train = parts.dataset.split("train")
        self.streamed = is_stream(train)
        if not self.streamed and len(train) == 0:
            raise PolyalignError(f"data: the {recipe.data.plugin!r} dataset's train split is empty")
        encoders = parts.model.encoders
        first = next(iter(train), {})
        self.workers = default_workers(first, self.streamed) if cfg.num_workers == "auto" else cfg.num_workers
        self.layout = f"{dist.world}x{self.workers}" if self.streamed else ""
        self.rank_batch = cfg.batch_size // dist.world
        root = parts.dataset.root

        self.features = feature_stores(recipe, parts)
        if self.features:
            if dist.is_main:
                fill_features(recipe, parts, self.features, device, show_progress)
            barrier()
            for store in self.features.values():
                store.refresh()
        rest = {m: enc for m, enc in encoders.items() if m not in self.features}
        self.inputs = input_stores(recipe, rest, first_values(parts, list(rest)), root, self.streamed)
        if self.streamed and recipe.cache.inputs == "disk" and not self.features:
            train = BlockStream(train, {m: partial(CachedDecode(encoders[m], store).decoded, root=root)
                                        for m, store in self.inputs.items()},
                                {m: store.folder.name for m, store in self.inputs.items()},  # type: ignore[union-attr]
                                cache_dir(recipe, "inputs") / "blocks")
        collate_fns = {m: torch.stack if m in self.features else enc.collate for m, enc in encoders.items()}
        if self.features or self.inputs:
            loaders: dict[str, Loader] = {
                m: FeatureLookup(self.features[m], m, enc.width) if m in self.features else
                CachedDecode(enc, self.inputs[m]) if m in self.inputs else enc.load for m, enc in encoders.items()}
            batch_loaders = {m: BatchOf(load, collate_fns[m]) for m, load in loaders.items()}
        else:
            loaders = {m: enc.load for m, enc in encoders.items()}
            batch_loaders = {m: enc.load_batch for m, enc in encoders.items()}
        collator = Collator(collate_fns)
        collate = cached_collator(collator, self.inputs)
        memory = any(isinstance(s, MemoryStore) for s in self.inputs.values())
        pin = cfg.pin_memory and device.type == "cuda"
        on_error = getattr(parts.dataset, "on_error", "raise")
        batch, workers = self.rank_batch, self.workers  # the loader builders below must not hold self (a cycle)

        if self.streamed:
            rows = RowLoader(loaders, root, batch_loaders)
            tuples = StreamTuples(train, rows, collate, self.rank_batch, recipe.seed, dist.rank, dist.world,
                                  "train", on_error)
            if tuples.batches == 0:
                raise PolyalignError(f"data: the train split has {len(train)} samples, fewer than one batch of "
                                     f"{cfg.batch_size} (train.batch_size)")
            self.train: Any = StreamLoader(tuples, self.workers, pin)
        else:
            train_set = parts.tuples("train", recipe.data.plugin, loaders, batch_loaders)

            def train_loader() -> EpochLoader:
                return EpochLoader(train_set, collate, batch, recipe.seed, dist.rank, dist.world, workers, pin)
            self.train = MemoryCacheLoader(train_loader, self.inputs, workers) if memory else train_loader()

        self.val_set = val_set = parts.tuples("val", recipe.data.plugin, loaders, batch_loaders)
        self.val: Any = None
        if len(val_set):
            def val_loader() -> Any:
                return make_loader(val_set, collate, batch, EpochSampler(len(val_set), 0, False, dist.rank, dist.world),
                                   workers, pin)
            self.val = MemoryCacheLoader(val_loader, self.inputs, self.workers) if memory else val_loader()

    def close(self) -> None:
        """Let the DataLoader workers go now (else they live until the loaders are garbage-collected,
        which, in a process that trains again, may happen in a forked worker of the next run)."""
        self.train = self.val = None

    def take_skipped(self) -> dict[str, list[str]]:
        """Per split, the errors of the rows skipped since the last call (``on_error: skip``)."""
        return {"train": self.train.take_skipped(), "val": self.val_set.take_skipped()}
