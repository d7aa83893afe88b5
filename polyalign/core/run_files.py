"""The names of the files in a run directory, and the rule loggers share on resume."""

from __future__ import annotations

from .errors import shown

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
REPORT_DIR = "eval"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
RANKS_JSON = "ranks.json"  # per-tuple ranks of the right candidate, for paired tests between runs
LOCK_FILE = ".polyalign.lock"


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
