"""The names of the files in a run directory, and the rule loggers share on resume."""

from __future__ import annotations

RECIPE_FILE = "recipe.yaml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
REPORT_DIR = "eval"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
LOCK_FILE = ".polyalign.lock"


def logged_before(row: dict, start_step: int, start_epoch: int) -> bool:
    """Whether a logged ``step``/``epoch`` row precedes a checkpoint at (``start_step``,
    ``start_epoch``): rows after it are logged again by the resumed run and must be dropped."""
    if row["kind"] == "epoch":
        return int(row["epoch"]) <= start_epoch
    return int(row["step"]) <= start_step
