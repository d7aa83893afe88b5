"""``polyalign sweep --search optuna``: Optuna's TPE sampler over the ``--grid`` space, each trial an
ordinary run, trials pruned on their validation loss, the study in SQLite (several processes or
machines work on one study), the best trial's recipe written out.

A trial's objective is ``--metric ROW`` measured on the validation split (the test split stays for
reporting: choosing on it would overstate the result)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyalign.core.errors import PolyalignError, cut, shown
from polyalign.core.hookspecs import hookimpl
from polyalign.files.atomic import atomic_write_text

from .launchers import SlurmOptions, _submitit_executor, launch_local, threads_per_run
from .plan import RUNS_DIR, merge_plan, new_plan, read_plan, split_values
from .worker import error_text

STUDY_DB = "study.db"
BEST_RECIPE = "best.yaml"
RANGE = re.compile(r"^\s*([-+0-9.eE]+)\s*\.\.\s*([-+0-9.eE]+)\s*(/log)?\s*$")


def parse_space(items: list[str]) -> dict[str, dict[str, Any]]:
    """``KEY=V1,V2`` (a choice), ``KEY=LOW..HIGH`` (a range; whole numbers: integers) or ``KEY=LOW..HIGH/log``."""
    space: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, rest = item.partition("=")
        key = key.strip()
        if not sep or not key or key == "seed":
            raise PolyalignError(f"--grid {shown(item)}: give KEY=V1,V2 or KEY=LOW..HIGH[/log] (not seed)")
        found = RANGE.match(rest)
        if found:
            low_text, high_text, log = found.groups()
            whole = all(re.fullmatch(r"[-+]?\d+", t) for t in (low_text, high_text))
            low, high = (int(low_text), int(high_text)) if whole else (float(low_text), float(high_text))
            if not low < high or (log and low <= 0):
                raise PolyalignError(f"--grid {shown(item)}: a range needs LOW < HIGH (and LOW > 0 with /log)")
            space[key] = {"kind": "int" if whole else "float", "low": low, "high": high, "log": bool(log)}
        else:
            space[key] = {"kind": "choice", "values": split_values(rest)}
    if not space:
        raise PolyalignError("--search optuna needs a space: --grid KEY=V1,V2 or --grid KEY=LOW..HIGH[/log]")
    return space


def _suggest(trial: Any, key: str, p: dict[str, Any]) -> str:
    """One sampled override ``key=value``."""
    if p["kind"] == "choice":
        return f"{key}={trial.suggest_categorical(key, p['values'])}"
    if p["kind"] == "int":
        return f"{key}={trial.suggest_int(key, p['low'], p['high'], log=p['log'])}"
    return f"{key}={trial.suggest_float(key, p['low'], p['high'], log=p['log'])!r}"


def _validation_rows(recipe: Any, weights: Path | None = None) -> dict[str, float]:
    """The recipe's evaluation rows on the validation split, by name (``zero_shot/b_from_a+c/accuracy``), of
    the model with ``weights`` (None: as initialised)."""
    from polyalign.core.assemble import assemble
    from polyalign.core.device import pick_device
    from polyalign.core.evaluator import eval_tag
    from polyalign.core.plugin_manager import default_plugins
    from polyalign.evaluation.evaluate import run_evaluators
    from polyalign.files.weights import load_weights

    plugins = default_plugins()
    parts = assemble(recipe, plugins)
    if weights is not None:
        parts.load_state_dict(load_weights(weights))
    device = pick_device(recipe.train.device)
    parts.model.to(device)
    parts.loss.to(device)
    rows = run_evaluators(recipe, parts, plugins, device, split="val")
    return {eval_tag(r, "val").removeprefix("eval/val/"): float(r["value"]) for r in rows}


def _metric_problem(metric: str, names: Any) -> str | None:
    """Why ``metric`` cannot be optimised among the rows ``names``, or None."""
    if metric in names:
        return None
    return (f"--metric {metric!r} is not a row of the recipe's evaluators; its rows: "
            f"{', '.join(names) or '(none: the recipe has no eval)'}")


def validation_value(run_dir: Path, metric: str) -> float:
    """The value of the evaluation row ``metric`` (e.g. ``zero_shot/b_from_a+c/accuracy``) on the validation split."""
    from polyalign.core.recipe import load_recipe
    from polyalign.files.run_files import RECIPE_FILE
    from polyalign.files.weights import run_checkpoint

    names = _validation_rows(load_recipe(run_dir / RECIPE_FILE), run_checkpoint(run_dir, "last"))
    problem = _metric_problem(metric, names)
    if problem is not None:
        raise PolyalignError(problem)
    return names[metric]


def check_metric(recipe: Any, metric: str) -> None:
    """Refuse, before any trial trains, a ``--metric`` that the recipe's evaluators do not produce (they run
    once on the validation split with the model as initialised)."""
    problem = _metric_problem(metric, _validation_rows(recipe))
    if problem is not None:
        raise PolyalignError(problem)


def open_storage(url: str, jobs: int) -> None:
    """Refuse, before any trial trains, a study storage that cannot be opened and written."""
    if ":memory:" in url or url.strip() in ("sqlite://", "sqlite:///"):
        raise PolyalignError(f"--storage {url!r}: an in-memory database lives and dies with one process, so the "
                             f"search's result (and {'its ' + str(jobs) + ' workers' if jobs > 1 else 'a resumed run'}) "
                             f"could not see its trials; give a file, e.g. sqlite:///sweeps/study.db")
    import optuna

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(url)
        storage.get_all_studies()
        probe = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE])  # a write, undone below
        storage.delete_study(probe)
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy, drivers and the file system each raise their own
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else \
            type(exc).__name__
        raise PolyalignError(f"--storage {url!r}: the study database cannot be opened and written ({cut(reason, 200)}); "
                             f"give an SQLAlchemy URL of a database this process can write, e.g. "
                             f"sqlite:///path/to/study.db (its folder must exist), or leave --storage out for "
                             f"one in the sweep folder") from None


class PruneOnValidationLoss:
    """A plugin that reports each epoch's validation loss to an Optuna trial and stops the run when the
    pruner says so."""

    def __init__(self, trial: Any):
        self.trial = trial

    @hookimpl
    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """Report ``val_loss``; raise ``optuna.TrialPruned`` to stop a trial that is worse than its peers."""
        import optuna

        if "val_loss" in metrics:
            self.trial.report(float(metrics["val_loss"]), epoch)
            if self.trial.should_prune():
                raise optuna.TrialPruned(f"validation loss {metrics['val_loss']:.4f} at epoch {epoch}")


def _study(sweep_dir: Path, pruner: Any = None, worker: int = 0) -> Any:
    """The sweep's study (created by the first caller); ``worker`` offsets the sampler's seed."""
    try:
        import optuna
    except ImportError:
        raise PolyalignError("--search optuna needs optuna: pip install 'polyalign[sweep]'") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial's error is kept and said once, at the end
    plan = read_plan(sweep_dir)
    search = plan.search or {}
    with warnings.catch_warnings():  # heartbeats (trials of a killed worker marked failed) are "experimental"
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(search["storage"], heartbeat_interval=60, grace_period=180)
    return optuna.create_study(study_name=search["study"], storage=storage, load_if_exists=True,
                               direction=search["direction"],
                               sampler=optuna.samplers.TPESampler(seed=plan.seeds[0] + worker),
                               pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))


def search_worker(sweep_dir: str | Path, worker: str = "worker-0", threads: int | None = None,
                  pruner: Any = None) -> int:
    """Run trials of the sweep's study until it has its number of finished (complete or pruned) trials;
    returns the number this worker ran."""
    import optuna

    from polyalign.core.plugin_manager import make_plugins
    from polyalign.run import train

    sweep_dir = Path(sweep_dir).resolve()
    plan = read_plan(sweep_dir)
    search = plan.search or {}
    if threads:
        import torch

        torch.set_num_threads(threads)
    ran = 0

    def objective(trial: Any) -> float:
        nonlocal ran
        ran += 1
        overrides = [_suggest(trial, k, p) for k, p in search["space"].items()]
        trial.set_user_attr("overrides", overrides)
        slot = sweep_dir / RUNS_DIR / f"trial-{trial.number:04d}"
        try:
            run_dir = train(plan.recipe, out=slot, overrides=[*plan.overrides, *overrides],
                                      plugins=make_plugins(extra=[PruneOnValidationLoss(trial)]))
            trial.set_user_attr("run_dir", str(run_dir))
            return validation_value(run_dir, search["metric"])
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("error", error_text(exc))
            raise

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    study = _study(sweep_dir, pruner, int(worker.rsplit("-", 1)[-1]))
    left = search["trials"] - len(study.get_trials(deepcopy=False, states=finished))
    if left > 0:
        study.optimize(objective, n_trials=left, catch=(Exception,),
                       callbacks=[optuna.study.MaxTrialsCallback(search["trials"], states=finished)])
    return ran


@dataclass
class SearchResult:
    """A search's trials by state, and its best trial."""

    sweep_dir: Path
    states: dict[str, int]
    best_value: float | None
    best_params: dict[str, Any]
    best_run: str | None
    best_recipe: Path | None
    errors: list[str]

    def text(self) -> str:
        """The outcome in a few lines."""
        lines = [f"search {self.sweep_dir}: " + ", ".join(f"{n} {s.lower()}" for s, n in self.states.items())]
        lines += [f"  failed trial: {e}" for e in self.errors]
        if self.best_recipe is None:
            return "\n".join(lines + ["no trial completed"])
        lines += [f"best value {self.best_value:.4f} with {', '.join(f'{k}={v}' for k, v in self.best_params.items())}",
                  f"best run: {self.best_run}", f"its recipe: {self.best_recipe} (polyalign train {self.best_recipe})"]
        return "\n".join(lines)


def search_result(sweep_dir: Path) -> SearchResult:
    """The study's outcome; writes the best trial's resolved recipe to ``best.yaml`` in the sweep directory."""
    study = _study(sweep_dir)
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    errors = [str(t.user_attrs["error"]) for t in trials if "error" in t.user_attrs]
    complete = [t for t in trials if t.state.name == "COMPLETE" and "run_dir" in t.user_attrs]
    if not complete:
        return SearchResult(sweep_dir, states, None, {}, None, None, errors)
    best = study.best_trial
    run_dir = Path(best.user_attrs["run_dir"])
    plan = read_plan(sweep_dir)
    path = sweep_dir / BEST_RECIPE
    text = (run_dir / "recipe.yaml").read_text(encoding="utf-8").split("\n", 1)[1]
    atomic_write_text(path, f"# polyalign train {path}\n# best of {len(complete)} trials of {plan.recipe}: "
                            f"{plan.search['metric']} = {best.value:.4f} on the validation split "
                            f"({', '.join(best.user_attrs.get('overrides', []))})\n" + text)
    return SearchResult(sweep_dir, states, float(best.value), dict(best.params), str(run_dir), path, errors)


def run_search(recipe: str | Path, space_items: list[str], trials: int, metric: str | None, direction: str,
               overrides: list[str] | None = None, out: str | Path | None = None, jobs: int = 1,
               threads: int | None = None, launcher: str = "local", slurm: SlurmOptions | None = None,
               echo: Callable[[str], None] = print, pruner: Any = None, storage: str | None = None) -> SearchResult:
    """Search the space with ``jobs`` workers on one study (resumed by the same command) in ``storage``
    (an SQLAlchemy URL; default: SQLite in the sweep directory), then write the best trial's recipe."""
    from polyalign.core.recipe import load_recipe

    if not metric:
        raise PolyalignError("--search optuna needs --metric ROW, the evaluation row to optimise (e.g. "
                             "zero_shot/b_from_a+c/accuracy; `polyalign eval` of a run lists its rows)")
    overrides = list(overrides or [])
    space = parse_space(space_items)
    base = load_recipe(recipe, overrides)
    sweep_dir = Path(out).resolve() if out else (Path("sweeps") / f"{base.name}-optuna").resolve()
    search = {"space": space, "trials": trials, "metric": metric, "direction": direction,
              "storage": storage or f"sqlite:///{sweep_dir / STUDY_DB}", "study": base.name}
    if storage:
        open_storage(storage, jobs)
    check_metric(base, metric)
    merge_plan(sweep_dir, new_plan(Path(recipe), overrides, {}, [base.seed], search))
    threads = threads_per_run(jobs, threads)
    echo(f"search {sweep_dir}: {trials} trial(s) of {', '.join(space)}; {jobs} worker(s) ({launcher}), "
         f"{threads} thread(s) each; study {search['storage']}")
    workers = [f"worker-{i}" for i in range(jobs)]
    if launcher == "local" and jobs == 1:
        search_worker(sweep_dir, workers[0], threads, pruner)
    elif launcher == "local":
        launch_local(sweep_dir, workers, jobs, threads, lambda w, s: echo(f"{w} ended: {s['state']}"),
                     work=search_worker, ended=lambda _d, _w, code: {"state": f"exit code {code}"})
    else:
        executor = _submitit_executor(sweep_dir, launcher, jobs, threads, slurm or SlurmOptions())
        for job in [executor.submit(search_worker, str(sweep_dir), w, threads) for w in workers]:
            try:
                job.result()
            except Exception as exc:  # noqa: BLE001 - a worker lost: the study keeps what it finished
                echo(f"submitit job {job.job_id} failed: {str(exc).strip()[-500:]}")
    return search_result(sweep_dir)
