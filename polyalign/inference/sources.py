"""Raw values for ``polyalign embed`` and ``search``: a folder, a manifest, an array, lines of text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyalign.core.errors import PolyalignError, not_a_file, shown
from polyalign.files.manifest_file import SUFFIXES, parse_cell, read_lines, read_manifest
from polyalign.files.npy_file import read_npy

SOURCE_KINDS = "a folder of files (one value per file), a manifest (.csv or .jsonl, one column per modality), " \
               "a .npy array (one value per row of its first axis) or a .txt file (one value per line)"


@dataclass
class Values:
    """Raw values of one modality, their ids, and the folder relative paths resolve against."""

    values: list[Any]
    ids: list[Any]
    root: Path | None


def check_ids(ids: list[Any], where: str, redo: str = "") -> None:
    """Refuse ids that are not text or numbers, or that repeat (compared as printed: 3 and "3" are one
    id), naming ``where`` they came from; ``redo`` says how to make them again."""
    seen: dict[str, int] = {}
    for row, value in enumerate(ids):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise PolyalignError(f"{where}: the id of row {row} is {shown(value)}; an id is text or a number{redo}")
        if str(value) in seen:
            raise PolyalignError(f"{where}: rows {seen[str(value)]} and {row} have the same id {shown(value)}; "
                                 f"each candidate needs its own id, or a search cannot say which one it found"
                                 f"{redo}")
        seen[str(value)] = row


def read_manifest_column(path: Path, modality: str) -> Values:
    """The ``modality`` column of a manifest; rows without it are skipped; ids from ``id`` or the row number."""
    samples, _ = read_manifest(path)
    columns = sorted({k for r in samples for k in r})
    if modality not in columns:
        raise PolyalignError(f"{path} has no column {shown(modality)}; its columns are: {', '.join(columns) or 'none'}")
    rows = [(i, s) for i, s in enumerate(samples) if modality in s]
    ids = [s.get("id", i) for i, s in rows]
    check_ids(ids, f"{path}", "; give each row its own value in the id column")
    return Values([s[modality] for _, s in rows], ids, path.parent)


def read_folder(path: Path) -> Values:
    """Every file under a folder (hidden ones skipped), sorted; ids are the relative paths."""
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
    return Values(files, list(files), path)


def read_source(source: str | Path, modality: str) -> Values:
    """The raw values of ``modality`` that ``source`` names (see :data:`SOURCE_KINDS`)."""
    if not str(source).strip():  # Path("") is the current folder: never read it for an empty source
        raise PolyalignError(f"the source of {shown(modality)} is empty; give {SOURCE_KINDS} (`.` for the files of "
                             f"the current folder)")
    path = Path(source).expanduser()
    if path.is_dir():
        found = read_folder(path)
        if not found.values:
            raise PolyalignError(f"the folder {path} holds no files")
        return found
    if not path.is_file():
        raise PolyalignError(f"{not_a_file(path)}; give {SOURCE_KINDS}")
    if path.suffix in SUFFIXES:
        return read_manifest_column(path, modality)
    if path.suffix == ".npy":
        rows = read_npy(path)
        if rows.ndim < 2:
            raise PolyalignError(f"{path} holds an array of shape {rows.shape}, which is one value, not rows of "
                                 f"values (a .npy source holds one value per row of its first axis); embed a file "
                                 f"holding one value with `polyalign embed --value {path}`")
        return Values(list(rows), list(range(len(rows))), None)
    if path.suffix == ".txt":
        lines = [line.strip() for line in read_lines(path) if line.strip()]
        check_ids(lines, f"{path}", " (the id of a line is its text); remove the repeated line, or give a "
                                     "manifest with an id column")
        return Values(lines, list(lines), path.parent)
    raise PolyalignError(f"{path}: cannot tell what values it holds; give {SOURCE_KINDS}")


def one_value(text: str) -> Values:
    """A single raw value given on the command line: a path (a file holding one value, e.g. a whole
    recording in a ``.npy``), inline text or ``[numbers]``; its id is the text itself."""
    return Values([parse_cell(text, "--value")], [text], None)


def split_assignment(text: str, option: str) -> tuple[str, str]:
    """``"audio=clip.wav"`` -> ``("audio", "clip.wav")``."""
    modality, sep, value = text.partition("=")
    if not sep or not modality.strip():
        raise PolyalignError(f"{option} {shown(text)}: write MODALITY=VALUE, e.g. {option} text=\"a dog\"")
    return modality.strip(), value


def query_value(text: str) -> Any:
    """A command-line query value: ``[0, 1, ...]`` or ``{...}`` is JSON, anything else stays text
    (a path or an inline string, as the modality's encoder reads it)."""
    return parse_cell(text, "--query")
