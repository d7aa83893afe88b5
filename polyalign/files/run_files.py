"""The names of the files in a run directory, and the rule loggers share on resume."""

from __future__ import annotations

from pathlib import Path

from polyalign.core.errors import PolyalignError, shown

from .json_file import JsonError, read_json

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
REPORT_DIR = "eval"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
RANKS_JSON = "ranks.json"  # per-tuple ranks of the right candidate, for paired tests between runs
LOCK_FILE = ".polyalign.lock"


def read_tracker_run(path: Path, keys: tuple[str, ...], logger: str) -> dict[str, str]:
    """The run file a tracking logger wrote in the run directory (``{"id": ...}``), with its ``keys``
    as text; a damaged one is an error naming it (not a failure of the tracker)."""
    redo = (f"; it records which {logger} run a resume continues: restore it, or delete it to log the rest "
            f"of this run as a new {logger} run")
    try:
        saved = read_json(path, f"the {logger} run file", max_bytes=1 << 20)
    except JsonError as exc:
        raise PolyalignError(f"{exc}{redo}") from None
    if not isinstance(saved, dict) or not all(isinstance(saved.get(k), str) and saved[k] for k in keys):
        raise PolyalignError(f"{path}: expected a JSON object with {', '.join(keys)} (text), got {shown(saved)}{redo}")
    return {k: saved[k] for k in keys}


def logged_before(row: dict, start_step: int, start_epoch: int) -> bool:
    """Whether a logged ``step``/``epoch`` row precedes a checkpoint at (``start_step``,
    ``start_epoch``): rows after it are logged again by the resumed run and must be dropped.
    Raises ValueError for a row no logger wrote (not a mapping with ``kind``, ``step``, ``epoch``)."""
    try:
        if row["kind"] == "epoch":
            return int(row["epoch"]) <= start_epoch
        if row["kind"] == "step":
            return int(row["step"]) <= start_step
    except (KeyError, TypeError, ValueError):
        pass
    raise ValueError(f"not a row polyalign logged: {shown(row)}")
