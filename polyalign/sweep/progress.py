"""``polyalign sweep --status DIR``: how many runs are done, running, evaluating, failed, waiting, and the time
left, estimated per configuration from the finished runs of that configuration (else of the most similar ones)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyalign.files.run_progress import trained_epochs

from .plan import RunSpec, find_run_dir, read_plan, slot_dir
from .worker import DONE, FAILED, INTERRUPTED, PENDING, RUNNING, finished, read_status, slot_busy

STATES = (DONE, RUNNING, FAILED, INTERRUPTED, PENDING)


@dataclass
class SweepProgress:
    """Each run's state, the share of a running run already trained (and whether it is being evaluated), the
    estimated seconds left and, per configuration with runs left, what its estimate was drawn from."""

    sweep_dir: Path
    states: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    fraction: dict[str, float] = field(default_factory=dict)
    evaluating: set[str] = field(default_factory=set)
    basis: dict[str, str] = field(default_factory=dict)
    seconds_left: float | None = None

    def counts(self) -> dict[str, int]:
        """Runs per state."""
        return {s: sum(1 for v in self.states.values() if v == s) for s in STATES}

    def text(self) -> str:
        """The progress in a few lines."""
        counts = self.counts()
        evaluating = f" ({len(self.evaluating)} of them evaluating)" if self.evaluating else ""
        head = ", ".join(f"{n} {s}{evaluating if s == RUNNING else ''}" for s, n in counts.items() if n)
        left = ("unknown (no finished run has a recorded time yet)" if self.seconds_left is None
                else f"about {_duration(self.seconds_left)}" if self.seconds_left > 0
                else "only evaluation" if self.evaluating else "none")
        lines = [f"{self.sweep_dir}: {len(self.states)} run(s): {head}; time left: {left}"]
        lines += [f"  evaluating  {k} (trained; its evaluation report is not written yet)" if k in self.evaluating
                  else f"  running     {k} ({self.fraction.get(k, 0.0):.0%} trained)"
                  for k, s in self.states.items() if s == RUNNING]
        lines += [f"  failed      {k}: {self.errors.get(k, '')}" for k, s in self.states.items() if s == FAILED]
        lines += [f"  interrupted {k} (the same sweep command resumes it)" for k, s in self.states.items()
                  if s == INTERRUPTED]
        lines += [f"  estimate    {config}: {basis}" for config, basis in self.basis.items()]
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min" if hours else f"{m} min {s:02d} s" if m else f"{s} s"


def trained_fraction(run_dir: Path | None) -> float:
    """The share of a run's epochs logged so far (from ``metrics.jsonl`` and its recipe's ``train.epochs``)."""
    found = trained_epochs(run_dir) if run_dir is not None else None
    return found[0] / max(found[1], 1) if found is not None else 0.0


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


def _label(spec: RunSpec) -> str:
    return ", ".join(spec.overrides) or "base"


def run_seconds(config: str, durations: dict[str, list[float]], grid: dict[str, set[str]]) -> tuple[float, str] | None:
    """The expected seconds of one run of ``config`` and where that figure comes from: the mean of its own
    finished runs, else of the finished runs of the configurations sharing the most grid values with it
    (``grid``: each configuration's overrides); None when no run has finished."""
    own = durations.get(config)
    if own:
        return sum(own) / len(own), f"from its {len(own)} finished run(s)"
    if not durations:
        return None
    shared = {other: len(grid[config] & grid[other]) for other in durations}
    most = max(shared.values())
    like = [other for other in durations if shared[other] == most]
    times = [d for other in like for d in durations[other]]
    names = "; ".join(", ".join(sorted(grid[other])) or "base" for other in like)
    return sum(times) / len(times), (f"no run of its own has finished: from {len(times)} run(s) of {names} "
                                     f"(sharing {most} of its {len(grid[config])} grid value(s))")


def sweep_progress(sweep_dir: str | Path) -> SweepProgress:
    """The progress of the sweep in ``sweep_dir``. Time left: each unfinished run's untrained share times
    the time of one run of its configuration (:func:`run_seconds`), summed, over the runs going at once (as
    many as the sweep's ``--jobs`` while enough are left)."""
    sweep_dir = Path(sweep_dir)
    plan = read_plan(sweep_dir)
    progress = SweepProgress(sweep_dir)
    durations: dict[str, list[float]] = {}
    grid: dict[str, set[str]] = {}
    labels: dict[str, str] = {}
    left: list[tuple[str, float]] = []  # (configuration, untrained share) of each unfinished run
    for spec in plan.runs:
        state, status, run_dir = run_state(slot_dir(sweep_dir, spec))
        grid[spec.config], labels[spec.config] = set(spec.overrides), _label(spec)
        name = f"{_label(spec)}, seed {spec.seed}"
        progress.states[name] = state
        if state == DONE and status.get("seconds"):
            durations.setdefault(spec.config, []).append(float(status["seconds"]))
        elif state == FAILED:
            progress.errors[name] = str(status.get("error", ""))
        if state in (RUNNING, INTERRUPTED, PENDING):
            progress.fraction[name] = trained_fraction(run_dir)
            if state == RUNNING and progress.fraction[name] >= 1.0:
                progress.evaluating.add(name)
            left.append((spec.config, 1.0 - progress.fraction[name]))
    if not left:
        progress.seconds_left = 0.0
        return progress
    each: dict[str, tuple[float, str]] = {}
    for config, _ in left:
        found = run_seconds(config, durations, grid)
        if found is None:
            return progress  # no finished run: the time left is unknown
        each[config] = found
    for config, (seconds, basis) in each.items():
        runs = sum(1 for c, share in left if c == config and share > 0)
        if runs:
            progress.basis[labels[config]] = f"{runs} run(s) to train, about {_duration(seconds)} each, {basis}"
    total = sum(share * each[config][0] for config, share in left)
    progress.seconds_left = total / max(1, progress.counts()[RUNNING], min(plan.jobs, len(left)))
    return progress
