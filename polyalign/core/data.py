"""Datasets: the plugin contract, loading raw values through encoders, data loaders."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import torch
from torch.utils.data import DataLoader, Sampler

from .batch import LoadedColumns
from .encoder import FileBytes, Input
from .errors import PolyalignError, shown

SPLITS = ("train", "val", "test")
Sample = dict[str, Any]


class Dataset(Protocol):
    """What a dataset plugin returns: modality names, a root folder and three splits.

    A split is either a sequence of samples (the map form: ``manifest``, ``xor``) or a
    :class:`polyalign.core.stream.StreamSplit` (the iterable form: samples read from shards
    front to back, for data too large to hold, e.g. ``webdataset``).

    Optional attributes the core uses when present: ``on_error`` (``"raise"`` or ``"skip"``:
    what to do with a row whose value fails to load), ``locate(split, index) -> str`` (where
    a row comes from, e.g. a manifest file and line, for error messages) and ``label_names``
    (the name of each class, indexed by the samples' integer ``label``: what zero-shot
    classification writes into its prompts).
    """

    modalities: Sequence[str]
    root: Path | None

    def split(self, name: str) -> Any:
        """The samples of ``train``, ``val`` or ``test``: a sequence, or a stream of shards."""
        ...


class DataError(PolyalignError):
    """A raw value could not be loaded; the message names the split, row and value."""


def describe_value(value: Any) -> str:
    """A short printable form of a raw value for error messages."""
    text = shown(value) if not isinstance(value, (str, Path, FileBytes)) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


Loader = Callable[[Any, Path | None], Input]


class BatchOf:
    """A ``load_batch`` made of a per-value loader and a collate function."""

    def __init__(self, load: Loader, collate: Callable[[list[Input]], Input]):
        self.load, self.collate = load, collate

    def __call__(self, values: list[Any], root: Path | None) -> Input:
        return self.collate([self.load(v, root) for v in values])


class RowLoader:
    """Loads raw samples through each modality's loader (its encoder's ``load``)."""

    def __init__(self, loaders: dict[str, Loader], root: Path | None,
                 batch_loaders: dict[str, Callable[[list[Any], Path | None], Input]] | None = None):
        self.loaders = loaders
        self.batch_loaders = batch_loaders
        self.root = root

    def row(self, sample: Sample, where: Callable[[], str]) -> dict[str, Input]:
        """``{modality: loaded value}`` of one sample; a value that fails raises :class:`DataError`
        whose message starts with ``where()``."""
        values = {}
        for m, load in self.loaders.items():
            raw = sample.get(m)
            if raw is None:
                continue
            try:
                values[m] = load(raw, self.root)
            except PolyalignError as exc:
                raise DataError(f"{where()}, modality {m!r} ({describe_value(raw)}): {exc}") from exc
            except Exception as exc:
                raise DataError(f"{where()}, modality {m!r} ({describe_value(raw)}): "
                                f"{type(exc).__name__}: {exc}") from exc
        return values

    def columns(self, samples: Sequence[Sample]) -> dict[str, tuple[list[int], Input]] | None:
        """Per modality, the rows that have it and their values loaded in one ``load_batch`` call;
        None when there are no batch loaders or any value fails (then load row by row)."""
        if self.batch_loaders is None:
            return None
        columns = {}
        try:
            for m, load_batch in self.batch_loaders.items():
                rows = [k for k, s in enumerate(samples) if s.get(m) is not None]
                if rows:
                    columns[m] = (rows, load_batch([samples[k][m] for k in rows], self.root))
        except Exception:
            return None
        return columns


@contextmanager
def seeded(base: int, position: int) -> Iterator[None]:
    """Inside, torch's random numbers come from a seed of ``(base, position)``; the caller's
    generator is left as it was. ``base < 0``: no change.

    Training loaders seed each batch from (run seed, epoch, the batch's place in the epoch), so
    the random draws of loading (augmentation) do not depend on which process loads the batch:
    not on ``train.num_workers``, not on a resume, not on the input cache.
    """
    if base < 0:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed((base * 1_000_003 + position) % 2**63)
        yield


class TupleDataset(torch.utils.data.Dataset):
    """Loads sample ``i`` of a split: ``(i, {modality: loaded value}, label)``."""

    def __init__(self, samples: Sequence[Sample], loaders: dict[str, Loader],
                 root: Path | None, split: str, source: str = "", on_error: str = "raise",
                 locate: Callable[[int], str] | None = None,
                 batch_loaders: dict[str, Callable[[list[Any], Path | None], Input]] | None = None):
        self.samples = samples
        self.rows = RowLoader(loaders, root, batch_loaders)
        self.root = root
        self.split = split
        self.source = source
        self.locate = locate
        # on_error=skip marks failed rows here; shared memory, so marks made in DataLoader workers
        # reach the main process. A skipped row is returned with every modality absent.
        self.skipped = torch.zeros(len(samples), dtype=torch.bool).share_memory_() if on_error == "skip" else None
        # the seed of this epoch's loading (set by EpochLoader; -1: none), shared with the workers
        self.seed = torch.full((1,), -1, dtype=torch.long).share_memory_()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[int, dict[str, Input], Any]:
        try:
            values = self.load_values(i)
        except DataError:
            if self.skipped is None:
                raise
            self.skipped[i] = True
            values = {}
        return i, values, self.samples[i].get("label")

    def __getitems__(self, indices: list[int]) -> LoadedColumns | list[tuple[int, dict[str, Input], Any]]:
        """Load a batch column by column (one ``load_batch`` call per modality); if anything
        fails, load it row by row instead, which names the failing row and honours on_error."""
        samples = [self.samples[i] for i in indices]
        with seeded(int(self.seed), indices[0] if indices else 0):
            columns = self.rows.columns(samples)
            if columns is None:
                return [self[i] for i in indices]
        return LoadedColumns(list(indices), columns, [s.get("label") for s in samples])

    def load_values(self, i: int) -> dict[str, Input]:
        """``{modality: loaded value}`` of row ``i``; a value that fails raises :class:`DataError`."""
        return self.rows.row(self.samples[i], lambda: self.where(i))

    def take_skipped(self) -> list[str]:
        """The errors of the rows skipped since the last call (``on_error=skip``), then forget them."""
        if self.skipped is None:
            return []
        rows = self.skipped.nonzero(as_tuple=True)[0].tolist()
        self.skipped.zero_()
        messages = []
        for i in rows:  # reloaded here to recover the message (workers cannot send it back)
            try:
                self.load_values(i)
                messages.append(f"{self.where(i)}: failed to load in a DataLoader worker, loads now")
            except DataError as exc:
                messages.append(str(exc))
        return messages

    def where(self, i: int) -> str:
        """Where row ``i`` comes from: the manifest file and line when the dataset says, and the split and row."""
        if self.locate is not None:
            return f"{self.locate(i)} (split {self.split!r}, row {i})"
        src = f"{self.source}: " if self.source else ""
        return f"{src}split {self.split!r}, row {i}"


def skip_summary(split: str, messages: list[str], limit: int = 10) -> str:
    """'skipped N row(s) of split ...' with the first ``limit`` errors, one per line."""
    lines = [f"skipped {len(messages)} row(s) of split {split!r} that failed to load (data.on_error=skip):"]
    lines += [f"  {m}" for m in messages[:limit]]
    if len(messages) > limit:
        lines.append(f"  ... and {len(messages) - limit} more")
    return "\n".join(lines)


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch that can start part-way (for exact mid-epoch resume)."""

    def __init__(self, size: int, seed: int, shuffle: bool = True,
                 rank: int = 0, world: int = 1, drop_last: bool = False):
        self.size, self.seed, self.shuffle = size, seed, shuffle
        self.rank, self.world = rank, world
        self.drop_last = drop_last
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Use the order of ``epoch``, skipping its first ``start`` indices of this rank."""
        self.epoch, self.start = epoch, start

    def order(self) -> list[int]:
        """This rank's full index order for the current epoch."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            idx = torch.randperm(self.size, generator=g).tolist()
        else:
            idx = list(range(self.size))
        if self.world > 1:
            usable = (self.size // self.world) * self.world if self.drop_last else self.size
            idx = idx[:usable]
            if len(idx) % self.world:
                idx += idx[: self.world - len(idx) % self.world]
            idx = idx[self.rank::self.world]
        return idx

    def __iter__(self):
        return iter(self.order()[self.start:])

    def __len__(self) -> int:
        return len(self.order()) - self.start


def worker_error(exc: PolyalignError) -> PolyalignError:
    """A polyalign error raised in a DataLoader worker reaches the main process as an error of
    the same type whose message is the worker's whole traceback; this is the error with its own
    message only, as the CLI should print it."""
    text = str(exc)
    marker = f"\n{type(exc).__module__}.{type(exc).__qualname__}: "
    if not text.startswith("Caught ") or marker not in text:
        return exc
    message = text.rsplit(marker, 1)[1].rstrip("\n")
    try:
        return type(exc)(message)
    except Exception:  # an error type built from something else than a message
        return PolyalignError(message)


class BatchLoader(DataLoader):
    """A DataLoader whose polyalign errors raised in workers keep their own message."""

    def __iter__(self) -> Any:
        batches = super().__iter__()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except PolyalignError as exc:
                raise worker_error(exc) from None
            yield batch


def make_loader(dataset: TupleDataset, collator: Callable[[Any], Any], batch_size: int, sampler: Sampler,
                num_workers: int = 0, pin_memory: bool = False, drop_last: bool = False) -> DataLoader:
    """A DataLoader of :class:`Batch` objects over ``dataset`` in ``sampler`` order.

    It has its own generator (for worker seeds), so creating an iterator never draws from the
    global RNG: a run resumed mid-epoch sees the same random numbers as an uninterrupted one.
    """
    return BatchLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collator,
                       num_workers=num_workers, pin_memory=pin_memory, drop_last=drop_last,
                       persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(0))


class EpochLoader:
    """The batches of one rank of a map-form split for training: a seeded order per epoch
    (:class:`EpochSampler`, last partial batch dropped) that can start part-way."""

    def __init__(self, tuples: TupleDataset, collator: Callable[[Any], Any], batch_size: int, seed: int,
                 rank: int = 0, world: int = 1, num_workers: int = 0, pin_memory: bool = False):
        self.tuples, self.batch_size = tuples, batch_size
        self.sampler = EpochSampler(len(tuples), seed, True, rank, world, drop_last=True)
        self.loader = make_loader(tuples, collator, batch_size, self.sampler, num_workers, pin_memory,
                                  drop_last=len(self.sampler) >= batch_size)
        self.batches = len(self.loader)

    def set_epoch(self, epoch: int, start_batch: int = 0, seed: int = 0) -> None:
        """Deliver ``epoch``'s batches from ``start_batch`` on; ``seed`` seeds their loading."""
        self.sampler.set_epoch(epoch, start=start_batch * self.batch_size)
        self.loader.generator.manual_seed(seed)
        self.tuples.seed[0] = seed

    def __len__(self) -> int:
        return self.batches

    def __iter__(self) -> Any:
        return iter(self.loader)

    def take_skipped(self) -> list[str]:
        """The errors of the rows skipped since the last call (``on_error: skip``)."""
        return self.tuples.take_skipped()
