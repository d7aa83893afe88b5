"""Raw values for ``polyalign embed`` and ``search``: a folder, a manifest, an array, lines of text."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyalign.core.errors import PolyalignError, not_a_file, shown
from polyalign.files.manifest_file import SUFFIXES, as_file, parse_cell, read_lines, read_manifest, with_files
from polyalign.files.npy_file import read_npy

SOURCE_KINDS = "a folder of files (one value per file), a manifest (.csv or .jsonl, one column per modality), " \
               "a .npy array (one value per row of its first axis) or a .txt file (one value per line)"


@dataclass
class Values:
    """Raw values of one modality, their ids, the folder relative paths resolve against, and their
    labels where the source has them (a manifest's ``label`` column)."""

    values: list[Any]
    ids: list[Any]
    root: Path | None
    labels: list[Any] | None = None


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
    samples = with_files(read_manifest(path)[0], path.parent)
    columns = sorted({k for r in samples for k in r})
    if modality not in columns:
        raise PolyalignError(f"{path} has no column {shown(modality)}; its columns are: {', '.join(columns) or 'none'}")
    rows = [(i, s) for i, s in enumerate(samples) if modality in s]
    ids = [s.get("id", i) for i, s in rows]
    check_ids(ids, f"{path}", "; give each row its own value in the id column")
    labels = [s.get("label") for _, s in rows]
    return Values([s[modality] for _, s in rows], ids, path.parent,
                  labels if any(label is not None for label in labels) else None)


def read_folder(path: Path) -> Values:
    """Every file under a folder (hidden ones skipped), sorted, as Paths relative to it; ids are those paths."""
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
    return Values([Path(f) for f in files], list(files), path)


def read_source(source: str | Path, modality: str) -> Values:
    """The raw values of ``modality`` that ``source`` names (see :data:`SOURCE_KINDS`)."""
    if not str(source).strip():  # Path("") is the current folder: never read it for an empty source
        raise PolyalignError(f"the source of {shown(modality)} is empty; give {SOURCE_KINDS} (`.` for the files of "
                             f"the current folder)")
    try:
        path = Path(source).expanduser()
    except RuntimeError:  # ~user of a user this machine does not have: the path as written
        path = Path(source)
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
        return Values([as_file(line, path.parent) for line in lines], list(lines), path.parent)
    raise PolyalignError(f"{path}: cannot tell what values it holds; give {SOURCE_KINDS}")


def one_value(text: str) -> Values:
    """A single raw value given on the command line: an existing file (a Path; e.g. a whole recording
    in a ``.npy``), ``[numbers]`` or inline text; its id is the text itself."""
    return Values([query_value(text, "--value")], [text], None)


def split_assignment(text: str, option: str) -> tuple[str, str]:
    """``"audio=clip.wav"`` -> ``("audio", "clip.wav")``."""
    modality, sep, value = text.partition("=")
    if not sep or not modality.strip():
        raise PolyalignError(f"{option} {shown(text)}: write MODALITY=VALUE, e.g. {option} text=\"a dog\"")
    return modality.strip(), value


def query_value(text: str, option: str = "--query") -> Any:
    """A command-line value: one naming an existing file (relative to the current folder) is that file,
    a Path; ``[0, 1, ...]`` or ``{...}`` is JSON; anything else is inline text."""
    return as_file(parse_cell(text, option), None)
