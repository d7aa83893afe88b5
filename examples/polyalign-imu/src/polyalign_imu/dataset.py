"""Dataset ``tuple_folders``: one folder per tuple, one file per modality.

    data/train/walk-0001/imu.csv       the file name (without suffix) is the modality
    data/train/walk-0001/caption.txt
    data/train/walk-0001/label.txt     optional: the tuple's class, an integer
    data/train/walk-0002/imu.csv       no caption.txt: the caption is missing in this tuple
    data/val/...   data/test/...       (optional splits)

A tuple's id is its folder's name; its values are its files, as ``Path``s relative to ``path``
(a ``Path`` is a file to every encoder: caption.txt is read, not taken as the text "caption.txt").
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from polyalign.plugin import SPLITS, PolyalignError, Sample


class TupleFoldersConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(description="folder holding train/ (and val/, test/), one sub-folder per tuple")
    modalities: list[str] | None = Field(None, min_length=2, description="file names to use (default: all in train/)")
    on_error: Literal["raise", "skip"] = Field("raise", description="a file that fails to load: raise = stop "
                                                                    "with an error naming it; skip = leave its row out")


def read_tuple(folder: Path, root: Path) -> Sample:
    """``{"id": folder name, modality: Path relative to root, ..., "label": int}`` of one tuple folder."""
    sample: Sample = {"id": folder.name}
    for file in sorted(folder.iterdir()):
        if not file.is_file() or file.name.startswith("."):
            continue
        if file.stem == "label":
            try:
                sample["label"] = int(file.read_text(encoding="utf-8"))
            except ValueError:
                raise PolyalignError(f"{file}: a label must be an integer") from None
        elif file.stem in sample:
            raise PolyalignError(f"{folder} has two files for modality {file.stem!r}; keep one")
        else:
            sample[file.stem] = file.relative_to(root)
    return sample


class TupleFolders:
    """One folder per tuple, one file per modality (imu.csv, caption.txt, ...), in train/val/test."""

    name = "tuple_folders"
    Options = TupleFoldersConfig

    def __init__(self, config: TupleFoldersConfig):
        self.root = Path(config.path).expanduser().resolve()
        self.on_error = config.on_error  # read by polyalign when a value fails to load
        if not (self.root / "train").is_dir():
            raise PolyalignError(f"data.path: {self.root} has no train/ folder; it should hold one folder per tuple")
        self._splits = {split: [read_tuple(folder, self.root) for folder in sorted((self.root / split).iterdir())
                                if folder.is_dir()] if (self.root / split).is_dir() else []
                        for split in SPLITS}
        found = sorted({key for sample in self._splits["train"] for key in sample} - {"id", "label"})
        unknown = sorted(set(config.modalities or []) - set(found))
        if unknown:
            raise PolyalignError(f"data.modalities: no file in {self.root / 'train'} is named {', '.join(unknown)}; "
                                 f"the modalities found are: {', '.join(found) or 'none'}")
        self.modalities = config.modalities or found
        keep = set(self.modalities) | {"id", "label"}
        self._splits = {split: [{k: v for k, v in s.items() if k in keep} for s in samples]
                        for split, samples in self._splits.items()}

    def split(self, name: str) -> list[Sample]:
        """The samples of ``train``, ``val`` or ``test`` (a missing modality is an absent key)."""
        return self._splits[name]

    def locate(self, name: str, index: int) -> str:
        """Where sample ``index`` of split ``name`` comes from (polyalign puts it in error messages)."""
        return f"tuple folder {self.root / name / self._splits[name][index]['id']}"
