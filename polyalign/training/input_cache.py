"""The decode-once input cache (recipe ``cache.inputs``).

What each encoder's ``decode`` returned for a value is kept after its first use, so later
epochs skip reading and decoding; the encoder's ``finish`` (random crops, flips) still runs at
every use. Encoders whose ``load`` is random and not split that way are refused.

* ``memory``: kept by the training process for this run. DataLoader workers decode in the
  first epoch and send what they decoded back with each batch; when the cache has grown, the
  next epoch starts new workers, which see the whole cache (forked with the process, not
  copied) and only finish and collate. Map-form (manifest) splits only.
* ``disk``: safetensors files under ``cache.dir/inputs/<encoder>-<hash of its load options and the
  library versions>/`` (:mod:`polyalign.training.cache_key`),
  keyed by the value: a file's absolute path, size, inode and modification time, a shard
  member's bytes, or an inline value itself. A changed file or load option is therefore
  decoded again (the stale entries are never read), and later runs reuse the folder. On
  streamed shards, each shard read whole is also kept as one block of decoded rows
  (:mod:`polyalign.training.shard_blocks`), read instead of the tar from then on.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import get_worker_info

from polyalign.core.assemble import Assembled
from polyalign.core.batch import Batch, Collator
from polyalign.core.data import DataError, Sample, describe_value
from polyalign.core.encoder import Encoder, FileBytes, Input
from polyalign.core.errors import PolyalignError
from polyalign.core.recipe import Recipe
from polyalign.core.stream import is_stream
from polyalign.files.cache_dir import cache_root

from .cache_key import options_key
from .shard_blocks import Decoded
from .state import rng_state, set_rng_state
from .tensor_store import TensorStore

SPLITS = ("train", "val")  # the splits the caches are filled for


def split_values(parts: Assembled, split: str, modality: str) -> Iterator[tuple[str, Any]]:
    """``(where, raw value)`` of ``modality`` in every sample of ``split`` (streams are read through)."""
    data = parts.dataset.split(split)
    entries: Iterator[tuple[str, Sample]] = data.entries() if is_stream(data) else \
        ((f"split {split!r}, row {i}", s) for i, s in enumerate(data))
    for where, sample in entries:
        if sample.get(modality) is not None:
            yield where, sample[modality]


def value_key(value: Any, root: Path | None) -> str:
    """A key naming a raw value and, for a file, its state (path, size, inode, modification time)."""
    digest = hashlib.blake2b(digest_size=16)
    if isinstance(value, FileBytes):
        digest.update(b"bytes\0" + value.data)
    elif isinstance(value, str):
        digest.update(b"text\0" + value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, Path):
        path = os.path.expanduser(str(value))
        if not os.path.isabs(path) and root is not None:
            path = os.path.join(root, path)
        try:
            st = os.stat(path)
            digest.update(f"file\0{os.path.abspath(path)}\0{st.st_size}\0{st.st_ino}\0{st.st_mtime_ns}".encode())
        except OSError:  # no such file (a WFDB record's name, or a file gone: decode then says so)
            digest.update(f"path\0{os.path.abspath(path)}".encode("utf-8", "surrogatepass"))
    else:
        arr = np.asarray(value)
        if arr.dtype == object:
            digest.update(b"repr\0" + repr(value).encode())
        else:
            digest.update(f"array\0{arr.dtype.str}\0{arr.shape}\0".encode() + arr.tobytes())
    return digest.hexdigest()


def cache_dir(recipe: Recipe, kind: str) -> Path:
    """``cache.dir/<kind>`` (default: the polyalign cache folder)."""
    return (Path(recipe.cache.dir).expanduser() if recipe.cache.dir else cache_root()) / kind


def check_deterministic(encoder: Encoder, modality: str, plugin: str, value: Any, root: Path | None) -> Input | None:
    """Refuse the input cache for an encoder whose decoded values are random: it says so
    (``random_decode``), or decoding ``value`` twice under different seeds gives different tensors.
    Returns ``value`` decoded (None without a value)."""
    advice = ("Set cache.inputs: none for this recipe, or give the encoder a deterministic decode() and "
              "put the random part in finish() (see polyalign.core.encoder.Encoder).")
    if encoder.random_decode:
        raise PolyalignError(f"cache.inputs: the {plugin!r} encoder of modality {modality!r} decodes values at "
                             f"random (random_decode = True): a cached value would repeat one draw. {advice}")
    if value is None:
        return None
    saved, was_training = rng_state(), encoder.training
    try:
        encoder.train()
        draws = []
        for seed in (1, 2):
            torch.manual_seed(seed)
            np.random.seed(seed)
            draws.append(encoder.decode(value, root))
    finally:
        encoder.train(was_training)
        set_rng_state(saved)
    a, b = draws
    same = (a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)) if isinstance(a, dict) \
        else torch.equal(a, b)
    if not same:
        raise PolyalignError(f"cache.inputs: the {plugin!r} encoder of modality {modality!r} decoded the same "
                             f"value ({describe_value(value)}) to different tensors under different random seeds, "
                             f"so its decoded values cannot be cached. {advice}")
    return a


Layout = tuple[tuple[str, torch.dtype, int], ...]
"""What a decoded value is made of: each field (``""`` for a lone tensor), its dtype and its number of
dimensions (the sizes may vary from value to value: a text's length, an image's size)."""


def layout(x: Any) -> Layout | None:
    """The :data:`Layout` of a decoded value (None if it is not a tensor or a dict of tensors)."""
    items = sorted(x.items()) if isinstance(x, dict) else [("", x)]
    if not all(isinstance(t, torch.Tensor) for _, t in items):
        return None
    return tuple((field, t.dtype, t.dim()) for field, t in items)


def describe_layout(shape: Layout | None) -> str:
    """A layout in words: ``a 3-D torch.float32 tensor`` or ``the fields ids (1-D torch.int64), ...``."""
    if shape is None:
        return "something that is not a tensor or a dict of tensors"
    if len(shape) == 1 and shape[0][0] == "":
        return f"a {shape[0][2]}-D {shape[0][1]} tensor"
    return "the fields " + ", ".join(f"{f} ({n}-D {dtype})" for f, dtype, n in shape)


class DiskInputs(TensorStore):
    """A modality's disk input cache folder: an entry that is not laid out as the encoder decodes values
    (fields, dtypes, dimensions of ``expected``; unchecked when None) is refused naming its file."""

    def __init__(self, folder: Path, modality: str, plugin: str, expected: Layout | None):
        super().__init__(folder)
        self.modality, self.plugin, self.expected = modality, plugin, expected

    def get(self, key: str) -> Input | None:
        x = super().get(key)
        if x is not None and self.expected is not None and (found := layout(x)) != self.expected:
            where = self.index[key][0] if key in self.index else self.folder
            raise PolyalignError(f"the input cache of modality {self.modality!r} holds {describe_layout(found)} "
                                 f"for a value in {where}, where the {self.plugin!r} encoder decodes values to "
                                 f"{describe_layout(self.expected)}: the cache was written by something else or "
                                 f"damaged. Delete the folder {self.folder} (its values are decoded again), or set "
                                 f"cache.inputs: none")
        return x


class MemoryStore:
    """Decoded values of one modality kept by the training process (``cache.inputs: memory``).

    In a DataLoader worker, new values go to an outbox that travels back with the batch
    (:class:`CacheCollate`); the main process keeps them (:meth:`receive`).
    """

    def __init__(self) -> None:
        self.values: dict[str, Input] = {}
        self.outbox: list[tuple[str, Input]] = []

    def __len__(self) -> int:
        return len(self.values)

    def get(self, key: str) -> Input | None:
        return self.values.get(key)

    def put(self, key: str, value: Input) -> None:
        if get_worker_info() is None:
            self.values[key] = value
        else:
            self.outbox.append((key, value))

    def flush(self) -> list[tuple[str, Input]]:
        """The values decoded since the last call in this worker (sent to the main process)."""
        out, self.outbox = self.outbox, []
        return out

    def receive(self, items: list[tuple[str, Input]]) -> None:
        """Keep values a worker decoded."""
        self.values.update(items)


Store = MemoryStore | TensorStore


class CachedDecode:
    """A modality's loader through the input cache: decode once per value, finish at every use."""

    def __init__(self, encoder: Encoder, store: Store):
        self.encoder, self.store = encoder, store

    def decoded(self, value: Any, root: Path | None) -> Input:
        """``value`` decoded: from the cache, else decoded now and kept."""
        key = value_key(value, root)
        x = self.store.get(key)
        if x is None:
            x = self.encoder.decode(value, root)
            self.store.put(key, x)
        return x

    def __call__(self, value: Any, root: Path | None) -> Input:
        x = value.value if isinstance(value, Decoded) else self.decoded(value, root)
        return self.encoder.finish(x, self.encoder.training)


class CacheCollate:
    """Collates a batch, then writes what was decoded for it (disk) or sends it along with the
    batch as ``(batch, {modality: [(key, value)]})`` (memory)."""

    def __init__(self, collator: Callable[[Any], Batch], stores: dict[str, Store]):
        self.collator, self.stores = collator, stores

    def __call__(self, items: Any) -> Batch | tuple[Batch, dict[str, list[tuple[str, Input]]]]:
        batch = self.collator(items)
        sent = {m: s.flush() for m, s in self.stores.items()}
        if any(isinstance(s, MemoryStore) for s in self.stores.values()):
            return batch, {m: v for m, v in sent.items() if v}
        return batch


class MemoryCacheLoader:
    """A loader whose batches carry newly decoded values: keeps them and yields the batches.

    ``build()`` makes the underlying loader; it is made again (new workers, forked with the
    cache as it is then) at the start of an iteration when the cache has grown since its
    workers started, so that workers decode a value only until the main process holds it.
    """

    def __init__(self, build: Callable[[], Any], stores: dict[str, Store], workers: int):
        self.build, self.stores, self.workers = build, stores, workers
        self.loader = build()
        self.forked_with: int | None = None  # entries the cache held when the workers started
        self.epoch: tuple[int, int, int] | None = None

    def set_epoch(self, epoch: int, start_batch: int = 0, seed: int = 0) -> None:
        self.epoch = (epoch, start_batch, seed)
        self.loader.set_epoch(epoch, start_batch, seed)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Any:
        held = sum(len(s) for s in self.stores.values())
        if self.workers and self.forked_with is not None and held > self.forked_with:
            self.loader = self.build()
            if self.epoch is not None:
                self.loader.set_epoch(*self.epoch)
        if self.forked_with is None or held > self.forked_with:
            self.forked_with = held
        for batch, decoded in self.loader:
            for m, items in decoded.items():
                self.stores[m].receive(items)  # type: ignore[union-attr]
            yield batch

    def take_skipped(self) -> list[str]:
        return self.loader.take_skipped()


def input_stores(recipe: Recipe, encoders: dict[str, Encoder], examples: dict[str, Any],
                 root: Path | None, streamed: bool) -> dict[str, Store]:
    """One store per modality for ``cache.inputs`` (none: no stores), after checking that each
    encoder's decoded values can be cached (``examples``: one raw value per modality)."""
    mode = recipe.cache.inputs
    if mode == "none":
        return {}
    if mode == "memory" and streamed:
        raise PolyalignError("cache.inputs: memory keeps a whole split in memory, but this train split is "
                             "streamed from shards; use cache.inputs: disk")
    stores: dict[str, Store] = {}
    for m, encoder in encoders.items():
        plugin = recipe.modalities[m].encoder.plugin
        example = check_deterministic(encoder, m, plugin, examples.get(m), root)
        folder = cache_dir(recipe, "inputs") / options_key(recipe.modalities[m].encoder, encoder, "inputs")
        stores[m] = MemoryStore() if mode == "memory" else \
            DiskInputs(folder, m, plugin, None if example is None else layout(example))
    return stores


def cached_collator(collator: Collator, stores: dict[str, Store]) -> Callable[[Any], Any]:
    """The collate function to use with the input cache's loaders."""
    return CacheCollate(collator, stores) if stores else collator


def fill_inputs(recipe: Recipe, parts: Assembled, stores: dict[str, Store],
                show_progress: bool = True) -> dict[str, int]:
    """Decode the train and val values missing from each disk store; return how many per modality."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    root, done = parts.dataset.root, {}
    skip = getattr(parts.dataset, "on_error", "raise") == "skip"
    with Progress(TextColumn("inputs {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), disable=not show_progress, transient=False) as bar:
        for m, store in stores.items():
            encoder, done[m] = parts.model.encoders[m], 0
            for split in SPLITS:
                task = bar.add_task(f"{m} ({split})", total=len(parts.dataset.split(split)))
                for where, value in split_values(parts, split, m):
                    bar.advance(task)
                    key = value_key(value, root)
                    if store.get(key) is not None:
                        continue
                    try:
                        store.put(key, encoder.decode(value, root))
                    except Exception as exc:
                        if skip:
                            continue
                        raise DataError(f"{where}, modality {m!r} ({describe_value(value)}): {exc}") from exc
                    done[m] += 1
                    if len(store.pending) >= recipe.train.batch_size:  # type: ignore[union-attr]
                        store.flush()
            store.flush()
    return done
