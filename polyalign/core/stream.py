"""The iterable form of a split: samples stored in shards and read front to back.

A dataset plugin whose split is too large to hold returns a :class:`StreamSplit` (the
``webdataset`` plugin does) instead of a list of samples: which shards there are, how many
samples each holds, and how to read one from a given position. The core decides who reads
what, so that every stream plugin splits, shuffles and resumes the same way.

One epoch (``resampled: false``), for R processes with W DataLoader workers each and B rows
per process and batch:

* the shards are put in a seeded order (seed, epoch) and read as one sequence of N samples;
* each rank takes K = N // (R·B) batches: a contiguous range of K·B samples of that sequence
  (the last N − R·K·B samples are left out of this epoch, as ``drop_last`` does; the order
  changes every epoch, so they are not always the same ones);
* batch j of a rank comes from lane j mod W, read by one worker (the DataLoader asks its
  workers in turn); each lane is one contiguous piece of its rank's range, so a worker opens
  only the shards that overlap it;
* each lane is shuffled through a buffer of ``shuffle_buffer`` samples seeded by
  (seed, epoch, rank, lane).

So in each epoch every sample is read by exactly one worker of one rank, and the stream of
batches depends only on (seed, epoch, R, W). To resume at batch b of an epoch, each lane reads
past (without decoding) the samples of the batches it had delivered and goes on from there.

With ``resampled: true`` each worker draws its samples instead: for each one, a source with
probability proportional to its weight, then the next sample of a shard of that source drawn at
random with replacement (seeded as above). The epoch then has the nominal length N (the samples
in all shards) and ``train.max_steps`` bounds the run.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from itertools import islice
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import IterableDataset, get_worker_info

from .batch import Batch, Collator, LoadedColumns
from .data import BatchLoader, DataError, RowLoader, Sample, seeded
from .errors import PolyalignError


@dataclass(frozen=True)
class Shard:
    """One shard of a stream: its name (a path, for messages), how many samples it holds and
    the index of the source (a weighted set of shards) it belongs to."""

    name: str
    size: int
    source: int = 0


class StreamSplit(ABC):
    """A split read from shards front to back (the iterable form of the dataset contract).

    ``weights`` has one entry per source (shards name theirs by index); they matter only with
    ``resampled``. Subclasses implement :meth:`read`.
    """

    def __init__(self, shards: Sequence[Shard], weights: Sequence[float] = (1.0,), resampled: bool = False,
                 shuffle_buffer: int = 1000):
        self.shards = list(shards)
        self.weights = list(weights)
        self.resampled = resampled
        self.shuffle_buffer = shuffle_buffer
        empty = [k for k in range(len(self.weights)) if not any(s.size for s in self.shards if s.source == k)]
        if self.shards and empty:
            names = [s.name for s in self.shards if s.source == empty[0]]
            shown_names = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
            raise PolyalignError(f"source {empty[0]} of the stream ({shown_names}) has no samples in any of its shards")

    @abstractmethod
    def read(self, shard: Shard, skip: int = 0) -> Iterator[tuple[str, Sample]]:
        """``(key, sample)`` for the samples of ``shard`` from position ``skip`` on (the ones
        before it are read past, not decoded)."""

    def __len__(self) -> int:
        return sum(s.size for s in self.shards)

    def entries(self) -> Iterator[tuple[str, Sample]]:
        """``(where, sample)`` for every sample, shard after shard, in their stored order."""
        for shard in self.shards:
            for key, sample in self.read(shard):
                yield where(shard, key), sample

    def __iter__(self) -> Iterator[Sample]:
        return (sample for _, sample in self.entries())

    def provided(self, count: int) -> str:
        """What the first ``count`` samples hold, for messages (here: their keys); a subclass that
        maps stored fields to modalities says which fields it read (e.g. shard members)."""
        keys: dict[str, None] = {}
        for sample in islice(self, count):
            keys.update((k, None) for k, v in sample.items() if v is not None)
        return "keys " + (", ".join(map(repr, keys)) or "(none)")


def is_stream(split: Any) -> bool:
    """Whether a split is in the iterable form."""
    return isinstance(split, StreamSplit)


def where(shard: Shard, key: str) -> str:
    """Where a sample comes from, for messages: its shard and key."""
    return f"shard {shard.name}, sample {key!r}"


def rank_batches(total: int, world: int, batch: int) -> int:
    """K: batches of ``batch`` rows each rank gets from an epoch of ``total`` samples."""
    return total // (world * batch)


def worker_batches(k: int, lane: int, lanes: int) -> int:
    """Batches of lane ``lane`` among a rank's first ``k`` (batch j belongs to lane j mod W)."""
    return len(range(lane, k, lanes))


def read_range(split: StreamSplit, order: list[int], start: int, count: int) -> Iterator[tuple[str, Sample]]:
    """``count`` samples of the shards taken in ``order`` as one sequence, from position ``start``."""
    pos, stop = 0, start + count
    for idx in order:
        if pos >= stop:
            return
        shard = split.shards[idx]
        end = pos + shard.size
        if end > start:
            skip = max(0, start - pos)
            want = min(end, stop) - pos - skip
            got = 0
            for key, sample in islice(split.read(shard, skip), want):
                got += 1
                yield where(shard, key), sample
            if got < want:
                raise DataError(f"shard {shard.name} ended after {skip + got} samples, but its size says "
                                f"{shard.size}: the shard changed since it was counted. Rewrite the sizes "
                                f"file beside it (or delete it to have the shards counted again).")
        pos = end


def draw_records(split: StreamSplit, rng: random.Random, count: int) -> Iterator[tuple[str, Sample]]:
    """``count`` samples drawn with replacement: a source by weight, then the next sample of
    a shard of it drawn at random (a new shard when that one is used up)."""
    by_source = [[s for s in split.shards if s.source == k and s.size] for k in range(len(split.weights))]
    counted = [list(shards) for shards in by_source]
    open_shards: list[tuple[Shard, Iterator[tuple[str, Sample]], list[int]] | None] = [None] * len(by_source)
    sources = list(range(len(by_source)))
    for _ in range(count):
        k = rng.choices(sources, split.weights)[0]
        while True:
            if open_shards[k] is None:
                if not by_source[k]:  # each of its shards read as empty: drawing again would never end
                    names = ", ".join(s.name for s in counted[k][:3]) + (" ..." if len(counted[k]) > 3 else "")
                    raise DataError(f"source {k} of the stream ({names}): its shards were counted as holding "
                                    f"{sum(s.size for s in counted[k])} samples, but reading them gives none "
                                    f"(members inside folders such as __x__/, which are not samples, or a sizes "
                                    f"file that does not match the shards?). Rewrite the shards with `polyalign "
                                    f"shards`, or delete the sizes file beside them to have them counted.")
                shard = rng.choice(by_source[k])
                open_shards[k] = (shard, ((where(shard, key), sample) for key, sample in split.read(shard)), [0])
            shard, reader, read = open_shards[k]  # type: ignore[misc]
            item = next(reader, None)
            if item is not None:
                read[0] += 1
                yield item
                break
            if not read[0]:
                by_source[k].remove(shard)  # it read as empty: never draw it again
            open_shards[k] = None


def buffer_shuffle(items: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    """``items`` in a seeded random order, holding at most ``size`` of them at once."""
    buffer: list[Any] = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        k = rng.randrange(size)
        yield buffer[k]
        buffer[k] = item
    rng.shuffle(buffer)
    yield from buffer


class StreamTuples(IterableDataset):
    """The batches of one rank of a :class:`StreamSplit`, each worker yielding its own (see the
    module docstring); every item is ``(Batch, messages of the rows skipped in it)``."""

    def __init__(self, split: StreamSplit, rows: RowLoader, collator: Collator, batch_size: int, seed: int,
                 rank: int = 0, world: int = 1, name: str = "train", on_error: str = "raise"):
        self.split, self.rows, self.collator = split, rows, collator
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.name, self.on_error = name, on_error
        self.batches = rank_batches(len(split), world, batch_size)
        # epoch, first batch and loading seed; in shared memory so that persistent workers see set_epoch
        self.position = torch.tensor([0, 0, -1], dtype=torch.long).share_memory_()

    def set_epoch(self, epoch: int, start_batch: int = 0, seed: int = -1) -> None:
        """Read the order of ``epoch``, from this rank's batch ``start_batch`` on; ``seed`` seeds
        the loading of each batch (see :func:`polyalign.core.data.seeded`)."""
        self.position[0], self.position[1], self.position[2] = epoch, start_batch, seed

    def records(self, epoch: int, lane: int, lanes: int) -> Iterator[tuple[str, Sample]]:
        """The raw samples of lane ``lane`` of ``lanes`` (one per worker) of this rank in ``epoch``."""
        k, b = self.batches, self.batch_size
        count = worker_batches(k, lane, lanes) * b
        seed = f"{self.seed}/{epoch}/{self.rank}/{lane}"
        if self.split.resampled:
            records = draw_records(self.split, random.Random(f"{seed}/draw"), count)
        else:
            order = list(range(len(self.split.shards)))
            random.Random(f"{self.seed}/{epoch}/shards").shuffle(order)
            before = sum(worker_batches(k, other, lanes) for other in range(lane)) * b
            records = read_range(self.split, order, self.rank * k * b + before, count)
        if self.split.shuffle_buffer > 1:
            records = buffer_shuffle(records, self.split.shuffle_buffer, random.Random(f"{seed}/shuffle"))
        return records

    def __iter__(self) -> Iterator[tuple[Batch, list[str]]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch, start, seed = (int(v) for v in self.position.tolist())
        # The DataLoader asks worker 0 first: after a resume at batch `start`, worker w reads the
        # lane of batch start + w, so that the batches still come in order.
        lane = (worker + start) % workers
        done = worker_batches(start, lane, workers)  # batches of this lane delivered before `start`
        records = islice(self.records(epoch, lane, workers), done * self.batch_size, None)
        for i in range(done, worker_batches(self.batches, lane, workers)):
            chunk = list(islice(records, self.batch_size))
            first = (i * workers + lane) * self.batch_size
            with seeded(seed, first):
                item = self.load(chunk, first)
            yield item

    def load(self, chunk: list[tuple[str, Sample]], first: int) -> tuple[Batch, list[str]]:
        """One batch of raw samples loaded and collated (rows numbered from ``first``), and the
        messages of the rows left out (``on_error: skip``; they count as having no modality)."""
        samples = [s for _, s in chunk]
        index = list(range(first, first + len(chunk)))
        columns = self.rows.columns(samples)
        if columns is not None:
            return self.collator(LoadedColumns(index, columns, [s.get("label") for s in samples])), []
        items, skipped = [], []
        for i, (place, sample) in zip(index, chunk):
            try:
                values = self.rows.row(sample, lambda: f"{place} (split {self.name!r})")
            except DataError as exc:
                if self.on_error != "skip":
                    raise
                values = {}
                skipped.append(str(exc))
            items.append((i, values, sample.get("label")))
        return self.collator(items), skipped


def _as_is(item: Any) -> Any:
    return item


class StreamLoader:
    """Batches of one rank of a stream for the trainer: ``set_epoch``, iteration, ``len`` (the
    batches of a whole epoch) and the messages of rows skipped since the last ``take_skipped``."""

    def __init__(self, tuples: StreamTuples, num_workers: int = 0, pin_memory: bool = False):
        self.tuples = tuples
        self.generator = torch.Generator().manual_seed(0)  # worker seeds, reseeded each epoch
        self.loader = BatchLoader(tuples, batch_size=None, collate_fn=_as_is, num_workers=num_workers,
                                  pin_memory=pin_memory, persistent_workers=num_workers > 0,
                                  generator=self.generator)
        self.skipped: list[str] = []

    def set_epoch(self, epoch: int, start_batch: int = 0, seed: int = 0) -> None:
        """Deliver ``epoch``'s batches from ``start_batch`` on; ``seed`` seeds their loading."""
        self.tuples.set_epoch(epoch, start_batch, seed)
        self.generator.manual_seed(seed)

    def __len__(self) -> int:
        return self.tuples.batches

    def __iter__(self) -> Iterator[Batch]:
        for batch, skipped in self.loader:
            self.skipped += skipped
            yield batch

    def take_skipped(self) -> list[str]:
        """The errors of the rows skipped since the last call, then forget them."""
        messages, self.skipped = self.skipped, []
        return messages
