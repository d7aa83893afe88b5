"""``polyalign sweep --status DIR``: how many runs are done, running, failed, waiting, and the time left."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyalign.files.json_file import JsonError, parse_json
from polyalign.files.run_files import METRICS_FILE, RECIPE_FILE
from polyalign.files.yaml_file import YamlError, read_yaml

from .plan import find_run_dir, read_plan, slot_dir
from .worker import DONE, FAILED, INTERRUPTED, PENDING, RUNNING, finished, read_status, slot_busy

STATES = (DONE, RUNNING, FAILED, INTERRUPTED, PENDING)


@dataclass
class SweepProgress:
    """Each run's state, the share of a running run already trained, and the estimated seconds left."""

    sweep_dir: Path
    states: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    fraction: dict[str, float] = field(default_factory=dict)
    seconds_left: float | None = None

    def counts(self) -> dict[str, int]:
        """Runs per state."""
        return {s: sum(1 for v in self.states.values() if v == s) for s in STATES}

    def text(self) -> str:
        """The progress in a few lines."""
        counts = self.counts()
        head = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        left = ("unknown (no run has finished yet)" if self.seconds_left is None
                else f"about {_duration(self.seconds_left)}" if self.seconds_left > 0 else "none")
        lines = [f"{self.sweep_dir}: {len(self.states)} run(s): {head}; time left: {left}"]
        lines += [f"  running     {k} ({self.fraction.get(k, 0.0):.0%} trained)" for k, s in self.states.items()
                  if s == RUNNING]
        lines += [f"  failed      {k}: {self.errors.get(k, '')}" for k, s in self.states.items() if s == FAILED]
        lines += [f"  interrupted {k} (the same sweep command resumes it)" for k, s in self.states.items()
                  if s == INTERRUPTED]
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min" if hours else f"{m} min {s:02d} s" if m else f"{s} s"


def trained_fraction(run_dir: Path | None) -> float:
    """The share of a run's epochs logged so far (from ``metrics.jsonl`` and its recipe's ``train.epochs``)."""
    if run_dir is None:
        return 0.0
    try:
        epochs = int(read_yaml(run_dir / RECIPE_FILE)["train"]["epochs"])
        lines = (run_dir / METRICS_FILE).read_text(encoding="utf-8").splitlines()
    except (OSError, YamlError, KeyError, TypeError, ValueError):
        return 0.0
    done = 0
    for line in lines:
        try:
            row: Any = parse_json(line, str(run_dir / METRICS_FILE))
            if row.get("kind") == "epoch":
                done = max(done, int(row["epoch"]))
        except (JsonError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return min(1.0, done / max(epochs, 1))


def run_state(slot: Path) -> tuple[str, dict[str, Any], Path | None]:
    """A slot's state (done, running, failed, interrupted or pending), its status record and run directory."""
    status = read_status(slot)
    run_dir = find_run_dir(slot) if slot.is_dir() else None
    if finished(run_dir, status):
        return DONE, status, run_dir
    if slot_busy(slot):
        return RUNNING, status, run_dir
    if status.get("state") == FAILED:
        return FAILED, status, run_dir
    return (INTERRUPTED if run_dir is not None or status else PENDING), status, run_dir


def sweep_progress(sweep_dir: str | Path) -> SweepProgress:
    """The progress of the sweep in ``sweep_dir``. Time left: each unfinished run's untrained share times
    the mean time of the finished runs of its configuration (the median of all finished runs if none),
    summed, over the runs going at once (as many as the sweep's ``--jobs`` while enough are left)."""
    sweep_dir = Path(sweep_dir)
    plan = read_plan(sweep_dir)
    progress = SweepProgress(sweep_dir)
    durations: dict[str, list[float]] = {}
    left: list[tuple[str, float]] = []  # (configuration, untrained share) of each unfinished run
    for spec in plan.runs:
        state, status, run_dir = run_state(slot_dir(sweep_dir, spec))
        name = f"{', '.join(spec.overrides) or 'base'}, seed {spec.seed}"
        progress.states[name] = state
        if state == DONE and status.get("seconds"):
            durations.setdefault(spec.config, []).append(float(status["seconds"]))
        elif state == FAILED:
            progress.errors[name] = str(status.get("error", ""))
        if state in (RUNNING, INTERRUPTED, PENDING):
            progress.fraction[name] = trained_fraction(run_dir)
            left.append((spec.config, 1.0 - progress.fraction[name]))
    every = [d for ds in durations.values() for d in ds]
    if every:
        mean = {config: sum(ds) / len(ds) for config, ds in durations.items()}
        typical = statistics.median(every)  # for a configuration not seen yet
        total = sum(share * mean.get(config, typical) for config, share in left)
        progress.seconds_left = total / max(1, progress.counts()[RUNNING], min(plan.jobs, len(left)))
    return progress
