"""Decoded shards in one file each: ``cache.inputs: disk`` on a streamed train split.

Reading a shard costs about as much as decoding its small members, so a cache that still reads
the tar and looks every value up saves little. Here the first pass over a shard decodes its
values as it reads them (each through the input cache: found there, or decoded and stored), and
a shard read whole in one pass is written as one **block**: every sample's decoded values, in
the shard's order, as one flat tensor per modality and field with offsets and shapes (and the
keys, labels and ids). Later passes read the block, memory-mapped, instead of the tar: a row is
a view into it, and only the encoder's ``finish`` (random crops, flips) runs on it.

A block is named by the shard file (absolute path, size, inode, modification time) and by the
input cache folders of the modalities (which name the encoders' load options), so a rewritten
shard or a changed option reads the tar again. Blocks are used when every modality of the recipe
goes through the input cache (not with ``cache.features``); a shard with a value that fails to
decode, or one read only in part, keeps being read from the tar.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from polyalign.core.data import Sample
from polyalign.core.encoder import Input
from polyalign.core.errors import PolyalignError
from polyalign.core.stream import Shard, StreamSplit
from polyalign.files.atomic import describe_os_error

BLOCK_FORMAT = 1
OPEN_BLOCKS = 8  # blocks kept open (memory-mapped) per process


@dataclass(frozen=True)
class Decoded:
    """A value its encoder has decoded already (from a block or the input cache): loading it only finishes it."""

    value: Input


def block_name(shard: Shard, folders: dict[str, str]) -> str | None:
    """The file name of a shard's block: its file's state and each modality's cache folder; None
    when the shard is not a local file."""
    try:
        st = os.stat(shard.name)
    except OSError:
        return None
    text = f"{BLOCK_FORMAT}\0{os.path.abspath(shard.name)}\0{st.st_size}\0{st.st_ino}\0{st.st_mtime_ns}\0" \
           f"{shard.size}\0{sorted(folders.items())}"
    return f"{hashlib.blake2b(text.encode(), digest_size=16).hexdigest()}.pt"


def pack(rows: list[tuple[str, Sample]], modalities: list[str]) -> dict[str, Any] | None:
    """The block of a shard's decoded rows; None when a field's dtype or rank differs between rows."""
    block: dict[str, Any] = {"format": BLOCK_FORMAT, "keys": [k for k, _ in rows],
                             "labels": [s.get("label") for _, s in rows], "ids": [s.get("id") for _, s in rows],
                             "modalities": {}}
    for m in modalities:
        index = [-1] * len(rows)
        fields: dict[str, list[torch.Tensor]] = {}
        kinds, count = set(), 0
        for i, (_, sample) in enumerate(rows):
            value = sample.get(m)
            if value is None:
                continue
            x = value.value
            kinds.add(isinstance(x, dict))
            index[i], count = count, count + 1
            for f, t in (x.items() if isinstance(x, dict) else [("", x)]):
                fields.setdefault(f, []).append(t)
        if len(kinds) > 1 or any(len(ts) != count for ts in fields.values()):
            return None
        packed = {}
        for f, ts in fields.items():
            if len({t.dtype for t in ts}) > 1 or len({t.dim() for t in ts}) > 1:
                return None
            sizes = torch.tensor([0] + [t.numel() for t in ts], dtype=torch.long)
            packed[f] = {"data": torch.cat([t.detach().reshape(-1).cpu() for t in ts]),
                         "offsets": sizes.cumsum(0), "shapes": torch.tensor([list(t.shape) for t in ts],
                                                                           dtype=torch.long)}
        block["modalities"][m] = {"index": torch.tensor(index, dtype=torch.long), "dict": kinds == {True},
                                  "fields": packed}
    return block


def unpack(block: dict[str, Any], skip: int) -> Iterator[tuple[str, Sample]]:
    """``(key, sample)`` of the rows of a block from position ``skip`` on; values are views into it."""
    cols = {m: (col["index"].tolist(), col["dict"],
                {f: (p["data"], p["offsets"].tolist(), p["shapes"].tolist()) for f, p in col["fields"].items()})
            for m, col in block["modalities"].items()}
    for i in range(skip, len(block["keys"])):
        sample: Sample = {}
        for m, (index, is_dict, fields) in cols.items():
            j = index[i]
            if j < 0:
                continue
            parts = {f: data[offsets[j]:offsets[j + 1]].view(shapes[j])
                     for f, (data, offsets, shapes) in fields.items()}
            sample[m] = Decoded(parts if is_dict else parts[""])
        if block["labels"][i] is not None:
            sample["label"] = block["labels"][i]
        if block["ids"][i] is not None:
            sample["id"] = block["ids"][i]
        yield block["keys"][i], sample


class BlockStream(StreamSplit):
    """A stream split whose shards are read from their blocks once written (see the module docstring).

    ``decoders[m](value)`` returns modality m's decoded value through the input cache.
    """

    def __init__(self, inner: StreamSplit, decoders: dict[str, Callable[[Any], Input]], folders: dict[str, str],
                 folder: Path):
        super().__init__(inner.shards, inner.weights, inner.resampled, inner.shuffle_buffer)
        self.inner, self.decoders, self.folders, self.folder = inner, decoders, folders, Path(folder)
        self.open_blocks: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:  # open blocks stay with their process
        return {**self.__dict__, "open_blocks": OrderedDict()}

    def read(self, shard: Shard, skip: int = 0) -> Iterator[tuple[str, Sample]]:
        name = block_name(shard, self.folders)
        block = self._open(name) if name is not None else None
        if block is not None:
            yield from unpack(block, skip)
            return
        rows: list[tuple[str, Sample]] | None = [] if skip == 0 and name is not None else None
        for key, sample in self.inner.read(shard, skip):
            out = dict(sample)
            for m, decode in self.decoders.items():
                if sample.get(m) is None:
                    continue
                try:
                    out[m] = Decoded(decode(sample[m]))
                except Exception:  # noqa: BLE001 - left raw: the loader reports it (or skips it, on_error: skip)
                    rows = None
            if rows is not None:
                rows.append((key, out))
                if len(rows) == shard.size and name is not None:  # before the last row goes: a reader may stop there
                    self._write(name, rows)
                    rows = None
            yield key, out

    def _open(self, name: str) -> dict[str, Any] | None:
        if name in self.open_blocks:
            self.open_blocks.move_to_end(name)
            return self.open_blocks[name]
        path = self.folder / name
        if not path.is_file():
            return None
        try:
            block = torch.load(path, mmap=True, weights_only=True)
        except Exception as exc:
            raise PolyalignError(f"cache file {path} cannot be read ({type(exc).__name__}: {exc}); delete it (the "
                                 f"shard is read and decoded again)") from exc
        self.open_blocks[name] = block
        while len(self.open_blocks) > OPEN_BLOCKS:
            self.open_blocks.popitem(last=False)
        return block

    def _write(self, name: str, rows: list[tuple[str, Sample]]) -> None:
        block = pack(rows, list(self.decoders))
        if block is None:
            return
        path = self.folder / name
        tmp = self.folder / f".tmp-{os.getpid()}-{name}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            torch.save(block, tmp)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise PolyalignError(f"cannot write to the cache folder {self.folder}: {describe_os_error(exc)}. "
                                 f"Free some space or set cache.dir elsewhere.") from exc
