"""Datasets: the plugin contract, loading raw values through encoders, data loaders."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import torch
from torch.utils.data import DataLoader, Sampler

from .batch import Collator, LoadedColumns
from .encoder import Input
from .errors import PolyalignError, shown

SPLITS = ("train", "val", "test")
Sample = dict[str, Any]


class Dataset(Protocol):
    """What a dataset plugin returns: modality names, a root folder and three splits.

    Optional attributes the core uses when present: ``on_error`` (``"raise"`` or ``"skip"``:
    what to do with a row whose value fails to load), ``locate(split, index) -> str`` (where
    a row comes from, e.g. a manifest file and line, for error messages) and ``label_names``
    (the name of each class, indexed by the samples' integer ``label``: what zero-shot
    classification writes into its prompts).
    """

    modalities: Sequence[str]
    root: Path | None

    def split(self, name: str) -> Sequence[Sample]:
        """The samples of ``train``, ``val`` or ``test``."""
        ...


class DataError(PolyalignError):
    """A raw value could not be loaded; the message names the split, row and value."""


def describe_value(value: Any) -> str:
    """A short printable form of a raw value for error messages."""
    text = shown(value) if not isinstance(value, (str, Path)) else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


class TupleDataset(torch.utils.data.Dataset):
    """Loads sample ``i`` of a split: ``(i, {modality: loaded value}, label)``."""

    def __init__(self, samples: Sequence[Sample], loaders: dict[str, Callable[[Any, Path | None], Input]],
                 root: Path | None, split: str, source: str = "", on_error: str = "raise",
                 locate: Callable[[int], str] | None = None,
                 batch_loaders: dict[str, Callable[[list[Any], Path | None], Input]] | None = None):
        self.samples = samples
        self.loaders = loaders
        self.batch_loaders = batch_loaders
        self.root = root
        self.split = split
        self.source = source
        self.locate = locate
        # on_error=skip marks failed rows here; shared memory, so marks made in DataLoader workers
        # reach the main process. A skipped row is returned with every modality absent.
        self.skipped = torch.zeros(len(samples), dtype=torch.bool).share_memory_() if on_error == "skip" else None

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
        if self.batch_loaders is None:
            return [self[i] for i in indices]
        samples = [self.samples[i] for i in indices]
        columns = {}
        try:
            for m, load_batch in self.batch_loaders.items():
                rows = [k for k, s in enumerate(samples) if s.get(m) is not None]
                if rows:
                    columns[m] = (rows, load_batch([samples[k][m] for k in rows], self.root))
        except Exception:
            return [self[i] for i in indices]
        return LoadedColumns(list(indices), columns, [s.get("label") for s in samples])

    def load_values(self, i: int) -> dict[str, Input]:
        """``{modality: loaded value}`` of row ``i``; a value that fails raises :class:`DataError`."""
        sample = self.samples[i]
        values = {}
        for m, load in self.loaders.items():
            raw = sample.get(m)
            if raw is None:
                continue
            try:
                values[m] = load(raw, self.root)
            except PolyalignError as exc:
                raise DataError(f"{self._where(i)}, modality {m!r} ({describe_value(raw)}): {exc}") from exc
            except Exception as exc:
                raise DataError(f"{self._where(i)}, modality {m!r} ({describe_value(raw)}): "
                                f"{type(exc).__name__}: {exc}") from exc
        return values

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
                messages.append(f"{self._where(i)}: failed to load in a DataLoader worker, loads now")
            except DataError as exc:
                messages.append(str(exc))
        return messages

    def _where(self, i: int) -> str:
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


def make_loader(dataset: TupleDataset, collator: Collator, batch_size: int, sampler: Sampler,
                num_workers: int = 0, pin_memory: bool = False, drop_last: bool = False) -> DataLoader:
    """A DataLoader of :class:`Batch` objects over ``dataset`` in ``sampler`` order.

    It has its own generator (for worker seeds), so creating an iterator never draws from the
    global RNG: a run resumed mid-epoch sees the same random numbers as an uninterrupted one.
    """
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collator,
                      num_workers=num_workers, pin_memory=pin_memory, drop_last=drop_last,
                      persistent_workers=num_workers > 0, generator=torch.Generator().manual_seed(0))
