"""Dataset ``webdataset``: tuples streamed from tar shards (the webdataset format), read with the
`webdataset <https://github.com/webdataset/webdataset>`_ library.

A sample is the run of members sharing a key (``00000017.png``, ``00000017.txt``,
``00000017.cls``); ``modalities`` says which member extension(s) hold each modality (default:
images in ``jpg``/``jpeg``/``png``/``webp`` and texts in ``txt``, as img2dataset writes them). An
extension ``e`` of modality ``m`` also matches a member ``<key>.m.e``, and ``m.e`` a member
``<key>.e``, where no other modality claims that name: shards written with either naming read with
either spelling. A member is passed to the encoder as a :class:`~polyalign.core.data.FileBytes`
(it reads like a file), except ``.json`` members of a modality, which hold inline values
(numbers) and are parsed; a sample without a modality's member has that modality absent.
``.cls`` (or ``.label.txt``) holds the label, ``.id.txt`` (or ``.id``) the id (default: the key).
The split is read as a stream (:mod:`polyalign.core.stream` says how it is split across
processes and DataLoader workers, shuffled and resumed); val and test are read whole when
evaluated. Shard sizes come from the ``sizes.json`` beside the shards (``polyalign shards``
writes it; open_clip's format), else the shards are counted once at start.
"""

from __future__ import annotations

import itertools
import re
import tarfile
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from polyalign.core.data import SPLITS, Sample
from polyalign.core.encoder import FileBytes
from polyalign.core.errors import PolyalignError, shown
from polyalign.core.stream import Shard, StreamSplit
from polyalign.files.json_file import JsonError, parse_json, read_json
from polyalign.files.manifest_file import ManifestError, parse_label

from .brace_count import count_expansions

SIZES_FILE = "sizes.json"
LABEL_EXT, ID_EXT = "cls", "id"
LABEL_TEXT_EXT, ID_TEXT_EXT = "label.txt", "id.txt"  # a label that is not an integer; an id
DEFAULT_MODALITIES = {"image": "jpg;jpeg;png;webp", "text": "txt"}  # img2dataset's image-text shards
MAX_SHARDS = 1_000_000
"""Shard files one pattern (or list) may name: a brace pattern is counted before it is expanded."""
MAX_MEMBER_BYTES = 1 << 30
"""Bytes of one member read at most: its size in the tar header is checked before it is read."""
META = re.compile(r"__[^/]*__($|/)")
"""Members webdataset skips as metadata (``__meta__/...``, ``__index__``): never counted, never read."""
Urls = str | list[str]


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid")
    urls: Urls = Field(description="shard path, brace pattern (data/a-{000000..000099}.tar) or a list of them")
    weight: float = Field(1.0, gt=0, description="share of the samples drawn from this source (resampled)")


class WebDatasetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(None, description="a folder written by `polyalign shards`: its train-*.tar, "
                                               "val-*.tar and test-*.tar")
    train: Urls | None = Field(None, description="train shards: a path, a brace pattern or a list of them")
    val: Urls | None = Field(None, description="val shards (read whole for validation; none = empty split)")
    test: Urls | None = Field(None, description="test shards (read whole for evaluation; none = empty split)")
    sources: list[Source] | None = Field(None, min_length=1, description="train shards as weighted sources "
                                         "[{urls, weight}], mixed by weight (weights need resampled: true)")
    modalities: dict[str, str | list[str]] = Field(
        default_factory=lambda: dict(DEFAULT_MODALITIES), min_length=1,
        description="modality -> member extension(s), e.g. {image: png;jpg, text: txt}; default: image "
                    "(jpg;jpeg;png;webp) and text (txt), as img2dataset writes them")
    shuffle_buffer: int = Field(1000, ge=0, description="samples each DataLoader worker shuffles among "
                                                        "(after a seeded shuffle of the shards)")
    resampled: bool = Field(False, description="draw shards with replacement, without end (bound the run "
                                               "with train.max_steps)")
    on_error: Literal["raise", "skip"] = Field("raise", description="a member that fails to load: raise = "
                                               "stop, naming shard and key; skip = leave it out and count it")

    @field_validator("modalities")
    @classmethod
    def _extensions(cls, value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        seen: dict[str, str] = {}
        for m, exts in value.items():
            if m in ("label", "id", LABEL_EXT):
                raise ValueError(f"{m!r} is reserved (the label is the .cls member, the id the .id member)")
            names = extensions(exts)
            if not names:
                raise ValueError(f"modality {m!r} lists no member extension")
            for ext in names:
                if ext in seen:
                    raise ValueError(f"extension {ext!r} is given to both {seen[ext]!r} and {m!r}")
                seen[ext] = m
        return value

    @model_validator(mode="after")
    def _one_train(self) -> "WebDatasetConfig":
        if self.sources is not None and self.train is not None:
            raise ValueError("give train (one set of shards) or sources (weighted sets), not both")
        if self.sources is None and self.train is None and self.path is None:
            raise ValueError("give the train shards: path (a folder from `polyalign shards`), train or sources")
        if not self.resampled and self.sources and len({s.weight for s in self.sources}) > 1:
            raise ValueError("source weights need resampled: true (without it every sample is read once per "
                             "epoch, so weights cannot change the mixture)")
        return self


def extensions(value: str | list[str]) -> tuple[str, ...]:
    """``"png;jpg"`` or ``[".png", "jpg"]`` -> ``("png", "jpg")`` (lower case, no dots)."""
    items = value.split(";") if isinstance(value, str) else value
    return tuple(e.strip().lstrip(".").lower() for e in items if e.strip().lstrip("."))


def member_modalities(modalities: dict[str, str | list[str]]) -> dict[str, str]:
    """Member extension -> modality: each extension given, plus its other spelling (``m.e`` for an
    extension ``e`` of modality ``m``, and ``e`` for ``m.e``) where no other modality claims it."""
    given = {ext: m for m, exts in modalities.items() for ext in extensions(exts)}
    spellings: dict[str, set[str]] = {}
    for ext, m in given.items():
        spellings.setdefault(ext[len(m) + 1:] if ext.startswith(f"{m}.") else f"{m}.{ext}", set()).add(m)
    return {**{ext: ms.pop() for ext, ms in spellings.items() if len(ms) == 1 and ext not in given}, **given}


def load_webdataset():
    try:
        import webdataset
    except ImportError:
        raise PolyalignError("the webdataset dataset needs the webdataset package: "
                             "pip install 'polyalign[webdataset]'") from None
    return webdataset


def expand(urls: Urls, where: str) -> list[Path]:
    """The local shard files of a path, brace pattern or list of them (each must exist)."""
    load_webdataset()
    from webdataset.shardlists import expand_urls

    found = []
    for pattern in [urls] if isinstance(urls, str) else urls:
        if "://" in pattern or pattern.startswith("pipe:"):
            raise PolyalignError(f"{where}: {pattern!r} is not a local path; polyalign reads local shard files "
                                 f"only (nothing is downloaded at run time)")
        try:
            count = sum(count_expansions(part) for part in pattern.split("::"))
        except ValueError as exc:
            raise PolyalignError(f"{where}: {exc}") from None
        if count + len(found) > MAX_SHARDS:
            raise PolyalignError(f"{where}: {shown(pattern)} names {count} shard files; polyalign reads at most "
                                 f"{MAX_SHARDS} (a range such as {{000000..000099}} names 100)")
        for name in expand_urls(pattern):
            path = Path(name).expanduser()
            if not path.is_file():
                raise PolyalignError(f"{where}: shard {path} not found (from {pattern!r})")
            found.append(path)
    if not found:
        raise PolyalignError(f"{where}: no shard in {urls!r}")
    return found


@lru_cache(maxsize=256)
def _sizes_file(folder: Path) -> dict[str, int]:
    file = folder / SIZES_FILE
    if not file.exists():
        return {}
    try:
        sizes = read_json(file, "shard sizes", max_bytes=256 << 20)
    except JsonError as exc:
        raise PolyalignError(f"{exc}; delete it to have the shards counted, or write it again with "
                             f"`polyalign shards`") from None
    if not isinstance(sizes, dict) or not all(type(v) is int and v >= 0 for v in sizes.values()):
        raise PolyalignError(f"{file}: expected {{shard file name: number of samples}}")
    return sizes


def count_samples(path: Path) -> int:
    """Samples in a shard, as webdataset groups its members (consecutive members sharing a key)."""
    from webdataset.tariterators import base_plus_ext, meta_prefix, meta_suffix

    count, last = 0, None
    try:
        with tarfile.open(path) as tar:
            for info in tar:
                name = info.name
                meta = "/" not in name and name.startswith(meta_prefix) and name.endswith(meta_suffix)
                if not info.isreg() or meta or META.match(name):
                    continue
                key, _ = base_plus_ext(name)
                if key is not None and key != last:
                    count, last = count + 1, key
    except (tarfile.TarError, OSError) as exc:
        raise PolyalignError(f"shard {path}: not a readable tar file ({exc}); write it again") from None
    return count


def bounded_members(fh: BinaryIO, shard: str) -> Iterator[dict]:
    """The regular members of a tar stream as webdataset's ``tar_file_iterator`` yields them
    (``{"fname", "data"}``, metadata skipped), each refused before it is read when its header
    announces more than MAX_MEMBER_BYTES (a sparse member of gigabytes in a shard of kilobytes)."""
    from webdataset.tariterators import meta_prefix, meta_suffix

    stream = tarfile.open(fileobj=fh, mode="r|*")
    for info in stream:
        name = info.name
        if not info.isreg() or META.match(name) or (
                "/" not in name and name.startswith(meta_prefix) and name.endswith(meta_suffix)):
            continue
        if info.size > MAX_MEMBER_BYTES:
            raise PolyalignError(f"shard {shard}: member {shown(name)} announces {info.size} bytes, more than "
                                 f"the {MAX_MEMBER_BYTES} polyalign reads of one member; leave such files out of "
                                 f"the shards (or check the shard: a forged or sparse member)")
        yield {"fname": name, "data": stream.extractfile(info).read()}
        stream.members = []


def shard_size(path: Path) -> int:
    """A shard's sample count: from the sizes file beside it, else counted."""
    sizes = _sizes_file(path.parent.resolve())
    return sizes[path.name] if path.name in sizes else count_samples(path)


class ShardStream(StreamSplit):
    """One split of tar shards; a sample's members become modality values by extension."""

    def __init__(self, shards: list[Shard], config: WebDatasetConfig, weights: list[float]):
        super().__init__(shards, weights, config.resampled, config.shuffle_buffer)
        self.modality_of = member_modalities(config.modalities)
        self.mapped = ", ".join(f"{m}: .{e}" for m, exts in config.modalities.items() for e in extensions(exts))

    def read(self, shard: Shard, skip: int = 0) -> Iterator[tuple[str, Sample]]:
        for i, raw in enumerate(self.raw_samples(shard)):
            if i >= skip:
                yield raw["__key__"], self.sample(raw, shard.name)

    def raw_samples(self, shard: Shard) -> Iterator[dict]:
        """The webdataset samples of a shard: ``__key__`` and the member bytes by extension."""
        from webdataset.tariterators import group_by_keys

        try:
            with open(shard.name, "rb") as fh:
                members = ({**m, "__url__": shard.name} for m in bounded_members(fh, shard.name))
                yield from group_by_keys(members)
        except (tarfile.TarError, OSError, ValueError) as exc:
            raise PolyalignError(f"shard {shard.name}: cannot read it as a tar of samples "
                                 f"({str(exc).split(' @ ')[0]}); write it again") from None

    def provided(self, count: int) -> str:
        """The member extensions of the first ``count`` samples, and the modality map they meet."""
        seen: dict[str, None] = {}
        raws = (raw for shard in self.shards for raw in self.raw_samples(shard))
        for raw in itertools.islice(raws, count):
            seen.update((f".{ext}", None) for ext in raw if not ext.startswith("__"))
        return (f"shard members {', '.join(seen) or '(none)'} (data.modalities maps {self.mapped}; a member "
                f"named KEY.EXT matches the extension EXT, everything after the key's first dot)")

    def sample(self, raw: dict, shard: str) -> Sample:
        """The polyalign sample of one webdataset sample (members by extension)."""
        key = raw["__key__"]
        sample: Sample = {}
        for ext, data in raw.items():
            m = self.modality_of.get(ext)
            if m is None or m in sample:
                continue
            member = FileBytes(f"{shard}:{key}.{ext}", data)
            sample[m] = member
            if ext.endswith("json"):
                try:
                    sample[m] = parse_json(data, member.name)
                except JsonError:
                    pass  # the encoder fails on the member itself, naming it (and data.on_error applies)
        if not sample:
            found = sorted(e for e in raw if not e.startswith("__"))
            raise PolyalignError(f"shard {shard}, sample {key!r}: no member holds a modality (its members end in "
                                 f"{shown(found)}; data.modalities reads {self.mapped}); name the extensions "
                                 f"the shards use in data.modalities")
        label = next((ext for ext in (LABEL_EXT, LABEL_TEXT_EXT) if ext in raw), None)
        if label is not None:
            where = f"shard {shard}, sample {key!r}, member .{label}"
            try:
                sample["label"] = parse_label(raw[label].decode("utf-8").strip(), where)
            except UnicodeDecodeError:
                raise ManifestError(f"{where}: the label is not UTF-8 text") from None
        ident = next((raw[ext] for ext in (ID_TEXT_EXT, ID_EXT) if ext in raw), None)
        sample["id"] = ident.decode("utf-8", "replace").strip() if ident is not None else key
        return sample


class WebDataset:
    """Train, val and test splits of tar shards."""

    root = None  # members are held in memory, not named by path

    def __init__(self, config: WebDatasetConfig):
        load_webdataset()
        self.on_error = config.on_error
        self.modalities = tuple(config.modalities)
        folder = Path(config.path).expanduser() if config.path else None
        if folder is not None and not folder.is_dir():
            raise PolyalignError(f"data.path: {folder} is not a folder; `polyalign shards DATA_DIR OUT_DIR` "
                                 f"writes one from a manifest folder")
        self._splits = {}
        for split in SPLITS:
            if split == "train" and config.sources is not None:
                groups = [(expand(s.urls, f"data.sources.{i}.urls"), s.weight) for i, s in enumerate(config.sources)]
            elif getattr(config, split) is not None:
                groups = [(expand(getattr(config, split), f"data.{split}"), 1.0)]
            else:
                files = sorted(folder.glob(f"{split}-*.tar")) if folder is not None else []
                if split == "train" and not files:
                    raise PolyalignError(f"data.path: {folder} holds no train-*.tar shards")
                groups = [(files, 1.0)] if files else []
            shards = [Shard(str(path), shard_size(path), k) for k, (paths, _) in enumerate(groups) for path in paths]
            self._splits[split] = ShardStream(shards, config, [w for _, w in groups] or [1.0])
        if len(self._splits["train"]) == 0:
            raise PolyalignError("data: the train shards hold no samples")

    def split(self, name: str) -> ShardStream:
        """The shards of ``train``, ``val`` or ``test`` as a stream."""
        return self._splits[name]


def build_webdataset(config: WebDatasetConfig) -> WebDataset:
    """Factory for ``webdataset``."""
    return WebDataset(config)
