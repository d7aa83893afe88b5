"""Write a manifest folder as webdataset tar shards (``polyalign shards``).

Each tuple becomes the members of one sample, named as webdataset and img2dataset name them:
``<key>.<ext>`` (``00000017.png``, ``00000017.txt``), so that open_clip's trainer and plain
``webdataset.WebDataset(...).decode()`` read them; only the modalities whose extensions another
modality shares (two vector modalities, both ``.json``) are named ``<key>.<modality>.<ext>``.
Files are copied as bytes (their extension kept), inline text becomes ``.txt`` and other inline
values (numbers) ``.json``; an integer label goes to ``<key>.cls`` (webdataset's class index),
any other label to ``<key>.label.txt``, and the id to ``<key>.id.txt``. The key is the tuple's
row number in its manifest (``00000017``). Train tuples are shuffled (seeded) before they are
cut into shards, since a shard is read front to back; val and test keep their order. Beside
the shards, ``sizes.json`` gives each shard's number of samples.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyalign.core.data import SPLITS, Sample
from polyalign.core.errors import PolyalignError
from polyalign.files.atomic import WriteError, atomic_write_text, describe_os_error

from .manifest import ManifestConfig, ManifestDataset
from .webdataset import ID_EXT, ID_TEXT_EXT, LABEL_EXT, LABEL_TEXT_EXT, MAX_MEMBER_BYTES, SIZES_FILE, load_webdataset

RESERVED_EXTENSIONS = frozenset({LABEL_EXT, ID_EXT})  # a modality with these is named <modality>.<ext>

UNFINISHED = ".polyalign-shards-unfinished"  # in OUT_DIR while `polyalign shards` writes it


@dataclass
class SplitShards:
    """What was written for one split."""

    split: str
    samples: int
    shards: list[Path]
    extensions: dict[str, set[str]] = field(default_factory=dict)  # modality -> member extensions

    @property
    def pattern(self) -> str:
        """The brace pattern naming the split's shards."""
        first, last = self.shards[0].name, self.shards[-1].name
        if len(self.shards) == 1:
            return str(self.shards[0])
        start, stop = first[len(self.split) + 1: -4], last[len(self.split) + 1: -4]
        return str(self.shards[0].parent / f"{self.split}-{{{start}..{stop}}}.tar")


def member(value: Any, modality: str, root: Path | None, where: str) -> tuple[str, bytes | Path]:
    """The extension and bytes of one raw value (a file: its path, streamed into the shard when it
    is written)."""
    if isinstance(value, str):
        path = Path(value).expanduser()
        path = path if path.is_absolute() or root is None else root / path
        if path.is_file():
            suffix = path.suffix.lower().lstrip(".")
            if suffix in ("", "hea", "dat"):
                raise PolyalignError(f"{where}, {modality!r}: {path} has no single-file format (a WFDB record is "
                                     f"a .hea and a .dat file); convert it to .npy before writing shards")
            size = path.stat().st_size
            if size > MAX_MEMBER_BYTES:
                raise PolyalignError(f"{where}, {modality!r}: {path} holds {size} bytes, more than the "
                                     f"{MAX_MEMBER_BYTES} polyalign reads of one shard member; leave it out")
            return suffix, path
        if Path(value).suffix.lower() in (".png", ".jpg", ".jpeg", ".wav", ".flac", ".npy", ".txt", ".json"):
            raise PolyalignError(f"{where}, {modality!r}: file {path} not found")
        return "txt", value.encode("utf-8")
    return "json", json.dumps(value).encode("utf-8")


def member_prefixes(data: ManifestDataset) -> dict[str, str]:
    """Each modality's member name prefix: ``""`` (``<key>.<ext>``) when no other modality and no
    label or id member has one of its extensions, else ``"<modality>."``."""
    found: dict[str, set[str]] = {m: set() for m in data.modalities}
    for split in SPLITS:
        for row, sample in enumerate(data.split(split)):
            for m in data.modalities:
                if sample.get(m) is not None:
                    found[m].add(member(sample[m], m, data.root, data.locate(split, row))[0])
    return {m: "" if not exts & RESERVED_EXTENSIONS and not any(exts & found[n] for n in found if n != m)
            else f"{m}." for m, exts in found.items()}


def write_shards(data_dir: str | Path, out_dir: str | Path, shard_size: int, seed: int = 0,
                 shuffle: bool = True) -> list[SplitShards]:
    """Write the manifests of ``data_dir`` as shards of ``shard_size`` tuples in ``out_dir``."""
    wds = load_webdataset()
    if shard_size < 1:
        raise PolyalignError(f"--shard-size must be at least 1, got {shard_size}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PolyalignError(f"{out} exists and is not a folder; give a new or empty folder for the shards")
    if out.exists() and any(out.iterdir()):
        if not unfinished_shards(out):
            raise PolyalignError(f"{out} is not empty; give a new or empty folder for the shards")
        for leftover in out.iterdir():  # what an interrupted `polyalign shards` wrote: written again
            leftover.unlink()
    data = ManifestDataset(ManifestConfig(path=str(data_dir)))
    prefixes = member_prefixes(data)
    out.mkdir(parents=True, exist_ok=True)
    (out / UNFINISHED).touch()
    sizes: dict[str, int] = {}
    written = []
    for split in SPLITS:
        samples: list[Sample] = data.split(split)
        if not samples:
            continue
        order = list(range(len(samples)))
        if shuffle and split == "train":
            random.Random(seed).shuffle(order)
        result = SplitShards(split, len(samples), [], {m: set() for m in data.modalities})
        for start in range(0, len(order), shard_size):
            path = out / f"{split}-{len(result.shards):06d}.tar"
            tmp = path.with_name(f".{path.name}.tmp")
            try:
                with wds.TarWriter(str(tmp), encoder=False, mtime=0) as tar:
                    for row in order[start:start + shard_size]:
                        write_sample(tar, f"{row:08d}", sample_members(samples[row], data, split, row, result,
                                                                       prefixes))
                os.replace(tmp, path)
            except OSError as exc:  # named by the shard, not by its temporary file or the file being copied
                tmp.unlink(missing_ok=True)
                raise WriteError(f"could not write the shard {path}: {describe_os_error(exc)}; the shards written "
                                 f"so far are replaced when the same command runs again") from exc
            sizes[path.name] = len(order[start:start + shard_size])
            result.shards.append(path)
        written.append(result)
    atomic_write_text(out / SIZES_FILE, json.dumps(sizes, indent=1) + "\n")
    (out / UNFINISHED).unlink()
    return written


def unfinished_shards(out: Path) -> bool:
    """Whether ``out`` holds only what an interrupted ``polyalign shards`` wrote: its marker, shards and
    a temporary shard (the marker is removed once ``sizes.json`` is written)."""
    if not (out / UNFINISHED).is_file():
        return False
    pattern = re.compile(rf"^(\.?({'|'.join(SPLITS)})-\d{{6}}\.tar(\.tmp)?|{re.escape(UNFINISHED)})$")
    return all(p.is_file() and not p.is_symlink() and pattern.match(p.name) for p in out.iterdir())


def write_sample(writer: Any, key: str, members: dict[str, bytes | Path]) -> None:
    """One sample's members, as webdataset's ``TarWriter.write`` writes them (in name order, with its
    mode, owner and time); a file is streamed from disk, never held whole in memory."""
    for ext in sorted(members):
        info = tarfile.TarInfo(f"{key}.{ext}")
        info.mode, info.uname, info.gname, info.mtime = writer.mode, writer.user, writer.group, writer.mtime
        value = members[ext]
        if isinstance(value, Path):
            try:
                fh = open(value, "rb")
            except OSError as exc:
                raise PolyalignError(f"cannot read {value} (sample {key}): {exc.strerror or exc}") from None
            with fh:
                info.size = os.fstat(fh.fileno()).st_size
                writer.tarstream.addfile(info, fh)
        else:
            info.size = len(value)
            writer.tarstream.addfile(info, io.BytesIO(value))


def sample_members(sample: Sample, data: ManifestDataset, split: str, row: int,
                   result: SplitShards, prefixes: dict[str, str]) -> dict[str, bytes | Path]:
    """The members of one tuple (modality ``m``'s named ``prefixes[m] + ext``); records each
    modality's member extension in ``result``."""
    where = data.locate(split, row)
    members = {}
    for m in data.modalities:
        if sample.get(m) is None:
            continue
        ext, blob = member(sample[m], m, data.root, where)
        members[prefixes[m] + ext] = blob
        result.extensions.setdefault(m, set()).add(prefixes[m] + ext)
    if "label" in sample:
        members[LABEL_EXT if isinstance(sample["label"], int) else LABEL_TEXT_EXT] = str(sample["label"]).encode()
    if "id" in sample:
        members[ID_TEXT_EXT] = str(sample["id"]).encode("utf-8")
    return members
