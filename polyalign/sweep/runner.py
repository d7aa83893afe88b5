"""``polyalign sweep``: check every run's recipe, record the plan, run what is not finished, report."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyalign.core.errors import PolyalignError, RecipeError
from polyalign.launch import SlurmOptions

from .launchers import LAUNCHERS, launch_local, launch_submitit, threads_per_run
from .plan import SweepPlan, check_size, find_run_dir, merge_plan, new_plan, slot_dir
from .worker import BUSY, DONE, FAILED, finished, read_status

DEFAULT_ROOT = Path("sweeps")


@dataclass
class SweepResult:
    """What one call of a sweep did: the sweep directory, the runs it found finished, and each run's end."""

    sweep_dir: Path
    plan: SweepPlan
    kept: list[str] = field(default_factory=list)
    ended: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def failed(self) -> dict[str, str]:
        """Run id -> error of each run that failed in this call."""
        return {k: str(s.get("error", "")) for k, s in self.ended.items() if s.get("state") not in (DONE, BUSY)}

    @property
    def elsewhere(self) -> list[str]:
        """The runs another live process was running (another sweep on the folder): not failed, not done here."""
        return [k for k, s in self.ended.items() if s.get("state") == BUSY]


def check_runs(plan: SweepPlan, echo: Callable[[str], None]) -> None:
    """Validate the recipe of every run before any starts: all problems at once, each with its run;
    notes (options dropped by a change of plugin) shown once per configuration."""
    from polyalign.core.recipe import load_recipe

    problems, notes = [], {}
    last_seed = {spec.config: spec for spec in plan.runs}  # seeds change only `seed`: its largest value is checked
    if len(last_seed) > 100:
        echo(f"checking the recipes of {len(last_seed):,} configurations")
    for spec in last_seed.values():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                load_recipe(plan.recipe, plan.all_overrides(spec))
            except RecipeError as exc:
                problems += [f"{spec.config}: {where}: {what}" for where, what in exc.problems]
        for w in caught:
            notes.setdefault(f"{spec.config}: {w.message}", None)
    for note in notes:
        echo(f"note: {note}")
    if problems:
        lines = "\n  ".join(dict.fromkeys(problems))
        raise PolyalignError(f"{plan.recipe}: the sweep's runs would not start:\n  {lines}")


def sweep_dir_for(out: str | Path | None, recipe_name: str) -> Path:
    """The sweep directory: ``out``, else ``sweeps/<recipe name>`` (so that the same command finds it again)."""
    return Path(out) if out else DEFAULT_ROOT / recipe_name


def run_sweep(recipe: str | Path, grid: dict[str, list[str]], seeds: int, overrides: list[str] | None = None,
              out: str | Path | None = None, jobs: int = 1, threads: int | None = None, launcher: str = "local",
              slurm: SlurmOptions | None = None, echo: Callable[[str], None] = print) -> SweepResult:
    """Run the grid x ``seeds`` of ``recipe`` under one sweep directory; finished runs are kept, interrupted
    ones resumed, failed ones recorded (and tried again by the next call)."""
    from polyalign.core.recipe import load_recipe

    if launcher not in LAUNCHERS:
        raise PolyalignError(f"--launcher {launcher!r}: use one of {', '.join(LAUNCHERS)}")
    overrides = list(overrides or [])
    check_size(grid, seeds)
    base = load_recipe(recipe, overrides)
    plan = new_plan(Path(recipe), overrides, grid, [base.seed + i for i in range(seeds)])
    plan.jobs = jobs
    check_runs(plan, echo)
    sweep_dir = sweep_dir_for(out, base.name).resolve()
    wanted = [r.id for r in plan.runs]
    plan = merge_plan(sweep_dir, plan)
    result = SweepResult(sweep_dir, plan)
    slots = {i: slot_dir(sweep_dir, plan.run(i)) for i in wanted}
    result.kept = [i for i in wanted if finished(find_run_dir(slots[i]), read_status(slots[i]))]
    todo = [i for i in wanted if i not in result.kept]
    if launcher == "slurm":
        threads = threads or (slurm or SlurmOptions()).cpus_per_task or 1
    else:
        threads = threads_per_run(jobs, threads)
    echo(f"sweep {sweep_dir}: {len(wanted)} run(s), {len(result.kept)} finished before, {len(todo)} to run "
         f"({launcher}, {jobs} at a time, {threads} thread(s) each)")

    def report(run_id: str, status: dict[str, Any]) -> None:
        result.ended[run_id] = status
        spec = plan.run(run_id)
        name = f"{', '.join(spec.overrides) or 'base'}, seed {spec.seed}"
        head = f"[{len(result.ended)}/{len(todo)}] {status.get('state', FAILED)}: {name}"
        if status.get("state") == DONE:
            echo(f"{head} ({status.get('seconds', 0):.0f} s) {status.get('run_dir')}")
        elif status.get("state") == BUSY:
            echo(f"{head}: running elsewhere (another process holds {slots[run_id]}; it records the run's end)")
        else:
            echo(f"{head}: {status.get('error', '')}")

    if todo:
        if launcher == "local":
            launch_local(sweep_dir, todo, jobs, threads, report)
        else:
            launch_submitit(sweep_dir, todo, jobs, threads, report, launcher, slurm)
    return result
