"""Raw values for ``polyalign embed`` and ``search``: a folder, a manifest, an array, lines of text."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PolyalignError

MANIFEST_SUFFIXES = (".csv", ".jsonl")
SOURCE_KINDS = "a folder of files, a manifest (.csv or .jsonl, one column per modality), a .npy array " \
               "(one row per value) or a .txt file (one value per line)"


@dataclass
class Values:
    """Raw values of one modality, their ids, and the folder relative paths resolve against."""

    values: list[Any]
    ids: list[Any]
    root: Path | None


def cell_value(cell: Any, where: str = "") -> Any:
    """A manifest cell as a raw value, read as the ``manifest`` dataset reads it: text starting
    with ``[`` or ``{`` is JSON (inline numbers or a row), blank text is missing (None)."""
    if not isinstance(cell, str):
        return cell
    text = cell.strip()
    if not text:
        return None
    if text[0] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolyalignError(f"{where or 'value'}: text starting with {text[0]!r} must be JSON "
                                 f"({exc.msg}); quote text that is not") from None
    return cell


def _manifest_rows(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolyalignError(f"cannot read the manifest {path}: {exc}") from None
    if path.suffix == ".csv":
        return list(csv.DictReader(io.StringIO(text, newline="")))
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PolyalignError(f"{path}, line {n}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise PolyalignError(f"{path}, line {n}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def read_manifest(path: Path, modality: str) -> Values:
    """The ``modality`` column of a manifest; rows without it are skipped; ids from ``id`` or the row number."""
    rows = _manifest_rows(path)
    columns = sorted({k for r in rows for k in r})
    if modality not in columns:
        raise PolyalignError(f"{path} has no column {modality!r}; its columns are: {', '.join(columns) or 'none'}")
    values, ids = [], []
    for i, row in enumerate(rows):
        value = cell_value(row.get(modality), f"{path}, row {i}, column {modality!r}")
        if value is None:
            continue
        ident = row.get("id")
        values.append(value)
        ids.append(str(ident).strip() if ident is not None and str(ident).strip() else i)
    return Values(values, ids, path.parent)


def read_folder(path: Path) -> Values:
    """Every file under a folder (hidden ones skipped), sorted; ids are the relative paths."""
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
    return Values(files, list(files), path)


def read_source(source: str | Path, modality: str) -> Values:
    """The raw values of ``modality`` that ``source`` names (see :data:`SOURCE_KINDS`)."""
    path = Path(source).expanduser()
    if path.is_dir():
        found = read_folder(path)
        if not found.values:
            raise PolyalignError(f"the folder {path} holds no files")
        return found
    if not path.is_file():
        raise PolyalignError(f"{path} does not exist; give {SOURCE_KINDS}")
    if path.suffix in MANIFEST_SUFFIXES:
        return read_manifest(path, modality)
    if path.suffix == ".npy":
        try:
            rows = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise PolyalignError(f"cannot read {path} as a NumPy array: {exc}") from None
        if rows.ndim != 2:
            raise PolyalignError(f"{path}: expected a 2-D array (one row per value), got shape {rows.shape}")
        return Values(list(rows), list(range(len(rows))), None)
    if path.suffix == ".txt":
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return Values(lines, list(lines), path.parent)
    raise PolyalignError(f"{path}: cannot tell what values it holds; give {SOURCE_KINDS}")


def split_assignment(text: str, option: str) -> tuple[str, str]:
    """``"audio=clip.wav"`` -> ``("audio", "clip.wav")``."""
    modality, sep, value = text.partition("=")
    if not sep or not modality.strip():
        raise PolyalignError(f"{option} {text!r}: write MODALITY=VALUE, e.g. {option} text=\"a dog\"")
    return modality.strip(), value


def query_value(text: str) -> Any:
    """A command-line query value: ``[0, 1, ...]`` or ``{...}`` is JSON, anything else stays text
    (a path or an inline string, as the modality's encoder reads it)."""
    return cell_value(text, "--query") if text.strip()[:1] in ("[", "{") else text
