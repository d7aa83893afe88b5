"""Manifest files: one JSON Lines or CSV file, one row per tuple, one column per modality.

Read by the ``manifest`` dataset plugin and by ``polyalign embed``/``search`` alike.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from polyalign.core.errors import PolyalignError

from .json_file import JsonError, parse_json

SUFFIXES = (".jsonl", ".csv")


class ManifestError(PolyalignError):
    """A manifest file is missing or malformed; the message names the file and line."""


RESERVED_KEYS = ("label", "id")  # the columns of a row that are not modalities
Sample = dict[str, Any]


def is_missing(value: Any) -> bool:
    """None or an empty/blank string."""
    return value is None or (isinstance(value, str) and not value.strip())


def parse_label(value: Any, where: str) -> Any:
    """Integer-like labels as ``int``; other strings as they are."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ManifestError(f"{where}: label must be a number or a string, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        return int(text) if text.lstrip("+-").isdigit() else text
    return value


def clean_row(row: dict[str, Any], where: str) -> Sample:
    """Drop missing cells; normalise ``label`` and ``id``."""
    sample: Sample = {}
    for key, value in row.items():
        if key is None:
            raise ManifestError(f"{where}: the row has more cells than the header has columns")
        key = key.strip()
        if is_missing(value):
            continue
        if key == "label":
            sample[key] = parse_label(value, where)
        elif key == "id":
            sample[key] = str(value)
        else:
            sample[key] = value
    return sample


FILE_ENDINGS = (".png", ".jpg", ".jpeg", ".wav", ".flac", ".npy", ".txt", ".hea")
"""Endings of a one-word cell that can only mean a file: such a cell is a Path even when the file is missing."""


def as_file(value: Any, root: Path | None) -> Any:
    """A text cell naming an existing file (relative to ``root``, or absolute; a WFDB record by its
    ``.hea``) as a :class:`~pathlib.Path`; any other cell as it is (a str stays text). A cell naming
    a folder is a Path too, so that the encoder's error says it is no file, and so is a one-word cell
    ending as a file does (:data:`FILE_ENDINGS`) whose file is missing: the encoder then says it is not
    found (with the row), instead of reading the name as text."""
    if not isinstance(value, str) or not value.strip() or "\n" in value:
        return value
    try:
        path = Path(value).expanduser()
        full = path if path.is_absolute() or root is None else root / path
        if full.exists() or full.with_name(full.name + ".hea").is_file():
            return path
    except (OSError, ValueError, RuntimeError):  # too long for a file name, a NUL byte, ~user of no user: text
        return value
    return path if path.suffix.lower() in FILE_ENDINGS and not any(c.isspace() for c in value) else value


def with_files(samples: list[Sample], root: Path | None) -> list[Sample]:
    """The samples with every modality cell that names a file as a Path (:func:`as_file`)."""
    return [{k: v if k in RESERVED_KEYS else as_file(v, root) for k, v in s.items()} for s in samples]


def read_jsonl(path: Path) -> tuple[list[Sample], list[int]]:
    """One JSON object per non-blank line; also each sample's line number."""
    samples, numbers = [], []
    for n, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            row = parse_json(line, f"{path}, line {n}")
        except JsonError as exc:  # not JSON, nested too deeply, an integer of 5000 digits...
            raise ManifestError(str(exc)) from None
        if not isinstance(row, dict):
            raise ManifestError(f"{path}, line {n}: expected a JSON object {{modality: value, ...}}, "
                                f"got {type(row).__name__}")
        samples.append(clean_row(row, f"{path}, line {n}"))
        numbers.append(n)
    return samples, numbers


def parse_cell(text: str, where: str) -> Any:
    """A CSV cell: JSON when it starts with ``[`` or ``{`` (inline numbers), else the text."""
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return parse_json(stripped, where)
        except JsonError as exc:  # not JSON, nested too deeply, an integer of 5000 digits...
            raise ManifestError(f"{exc}; a cell starting with {stripped[0]!r} is read as JSON: quote text "
                                f"that is not") from None
    return text


def read_csv(path: Path) -> tuple[list[Sample], list[int]]:
    """A header row, then one tuple per row; also each sample's line number."""
    reader = csv.DictReader(read_lines(path))
    try:
        if not reader.fieldnames:
            raise ManifestError(f"{path}: empty CSV file; the first row must name the columns")
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as exc:  # a cell over the csv module's field size limit, a NUL byte...
        raise ManifestError(f"{path}, line {reader.line_num + 1}: not a CSV row ({exc})") from None
    samples, numbers = [], []
    for line_num, row in rows:
        where = f"{path}, line {line_num}"
        if not any(not is_missing(v) for v in row.values() if isinstance(v, str)):
            continue
        parsed = {k: (parse_cell(v, f"{where}, column {k!r}") if isinstance(v, str) and k not in RESERVED_KEYS
                      else v) for k, v in row.items()}
        samples.append(clean_row(parsed, where))
        numbers.append(line_num)
    return samples, numbers


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (a leading BOM is ignored)."""
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise ManifestError(f"{path}: not a UTF-8 text file ({exc})") from None
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror or exc}") from None


def read_manifest(path: Path) -> tuple[list[Sample], list[int]]:
    """The samples of one ``.jsonl`` or ``.csv`` manifest and their line numbers."""
    if path.suffix not in SUFFIXES:
        raise ManifestError(f"{path}: a manifest must be a .jsonl or .csv file")
    return read_jsonl(path) if path.suffix == ".jsonl" else read_csv(path)
