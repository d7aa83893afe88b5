"""Dataset ``manifest``: JSON Lines or CSV files listing one tuple per row, one column per modality.

A cell that names an existing file relative to the manifest's folder (an image, a clip, a caption
file...) is that file, a :class:`~pathlib.Path`; any other text is inline text; numbers are numbers.
A missing modality is an absent key, an empty cell or ``null``.
The reserved columns ``label`` and ``id`` are optional. A label is a class number or a class name
(text); ``label_names`` names the classes of number labels (label 7 is ``label_names[7]``), as
zero-shot classification's prompts need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from polyalign.plugin import (
    RESERVED_KEYS,
    SPLITS,
    SUFFIXES,
    ManifestError,
    Sample,
    not_a_file,
    read_manifest,
    with_files,
)

OnError = Literal["raise", "skip"]


class ManifestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str | None = Field(None, description="folder holding train/val/test .jsonl or .csv manifests")
    train: str | None = Field(None, description="the train manifest (default: PATH/train.jsonl or .csv)")
    val: str | None = Field(None, description="the val manifest (default: PATH/val.*; none = empty split)")
    test: str | None = Field(None, description="the test manifest (default: PATH/test.*; none = empty split)")
    root: str | None = Field(None, description="folder relative paths resolve against (default: the manifests')")
    modalities: list[str] | None = Field(None, min_length=1,
                                         description="columns to use (default: every column but label and id)")
    label_names: list[str] | None = Field(
        None, min_length=1, description="the name of each class, indexed by integer labels (zero-shot "
                                        "classification prompts with them; text labels are names already)")
    on_error: OnError = Field("raise", description="a row whose file cannot be loaded: raise = stop with an "
                                                   "error naming it; skip = leave the row out and report it")


def find_manifests(config: ManifestConfig) -> dict[str, Path | None]:
    """The manifest file of each split (None = no file: an empty split)."""
    folder = Path(config.path).expanduser() if config.path else None
    if folder is not None and not folder.is_dir():
        raise ManifestError(f"data.path: {folder} is not a folder. It should hold train.jsonl or train.csv "
                            f"(and val/test); `polyalign demo-data DIR` writes an example.")
    found: dict[str, Path | None] = {}
    for split in SPLITS:
        given = getattr(config, split)
        if given is not None:
            path = Path(given).expanduser()
            if not path.is_file():
                what = "not found" if not path.exists() else not_a_file(path).removeprefix(f"{path} ")
                raise ManifestError(f"data.{split}: manifest {path} {what}")
            found[split] = path
            continue
        candidates = [folder / f"{split}{s}" for s in SUFFIXES if folder and (folder / f"{split}{s}").is_file()]
        if len(candidates) > 1:
            raise ManifestError(f"{folder} holds both {candidates[0].name} and {candidates[1].name}; "
                                f"keep one, or choose with data.{split}")
        found[split] = candidates[0] if candidates else None
    if found["train"] is None:
        where = f"{folder} has no train.jsonl or train.csv" if folder else "no manifest given"
        raise ManifestError(f"data: {where}; set data.path to the manifests' folder or data.train to a file")
    return found


class ManifestDataset:
    """JSON Lines or CSV manifests per split: one row per tuple, one column per modality (paths or inline)

    Splits read from manifest files; ``root`` is the folder their relative paths start from."""

    name = "manifest"
    Options = ManifestConfig

    def __init__(self, config: ManifestConfig):
        self.on_error: OnError = config.on_error
        self.label_names = config.label_names
        self.files = find_manifests(config)
        folders = {p.resolve().parent for p in self.files.values() if p is not None}
        if config.root is not None:
            self.root: Path | None = Path(config.root).expanduser().resolve()
        elif len(folders) == 1:
            self.root = folders.pop()
        else:
            raise ManifestError(f"the manifests are in different folders ({', '.join(sorted(map(str, folders)))}); "
                                f"set data.root to the folder their relative paths start from")
        read = {s: (read_manifest(p) if p is not None else ([], [])) for s, p in self.files.items()}
        self._splits = {s: with_files(rows, self.root) for s, (rows, _) in read.items()}
        self._lines = {s: numbers for s, (_, numbers) in read.items()}
        columns: dict[str, None] = {}
        for sample in self._splits["train"]:
            columns.update((k, None) for k in sample if k not in RESERVED_KEYS)
        if config.modalities is not None:
            unused = [m for m in config.modalities if m not in columns]
            if unused:
                raise ManifestError(f"data.modalities: {', '.join(map(repr, unused))} never appear in "
                                    f"{self.files['train']}; its columns are {', '.join(columns) or '(none)'}")
            keep = set(config.modalities) | set(RESERVED_KEYS)
            self._splits = {s: [{k: v for k, v in x.items() if k in keep} for x in rows]
                            for s, rows in self._splits.items()}
            self.modalities = tuple(config.modalities)
        else:
            self.modalities = tuple(columns)
        if not self.modalities:
            raise ManifestError(f"{self.files['train']}: no modality columns (only label/id, or no rows)")
        if self.label_names is not None:
            for split, rows in self._splits.items():
                bad = next((i for i, r in enumerate(rows) if isinstance(r.get("label"), int)
                            and not 0 <= r["label"] < len(self.label_names)), None)
                if bad is not None:
                    raise ManifestError(f"{self.locate(split, bad)}: label {rows[bad]['label']} names no class of "
                                        f"data.label_names ({len(self.label_names)} names, numbered from 0); "
                                        f"give a name for every class number")

    def split(self, name: str) -> list[Sample]:
        """The samples of ``train``, ``val`` or ``test``."""
        return self._splits[name]

    def locate(self, name: str, index: int) -> str:
        """Where sample ``index`` of split ``name`` comes from: the manifest file and line."""
        return f"manifest {self.files[name]}, line {self._lines[name][index]}"
