"""The ``polyalign`` command line: train, eval, compare, validate, plugins, recipes, embed, index, search,
export, serve, plot, demo-data, shards, cache, sweep."""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from polyalign.core.errors import Notice, PolyalignError, shown
from polyalign.files.run_files import REPORT_DIR, REPORT_JSON, REPORT_MD
from polyalign.openmp_wait import wait_passively

err = Console(stderr=True, highlight=False)
# Piped (a log, a notebook cell), rich would assume 80 columns and wrap table cells mid-word; 160 fits the
# widest tables polyalign prints (compare, paired tests). COLUMNS still wins where it is set.
PIPED_WIDTH = 160
out = Console(highlight=False, width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else PIPED_WIDTH)
DEBUG_HELP = "on an error, also print the full traceback (or set POLYALIGN_DEBUG=1)"
DEMO_MAX_ROWS = 100_000  # tuples per split of demo-data (four small files each)


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors cut as polyalign's own are (they echo the value given, which may be huge)."""

    def error(self, message: str):  # type: ignore[override]
        super().error(str(PolyalignError(message)))


class _CommandParser(_Parser):
    """A subcommand's parser: options may come between and after its positionals, so
    ``train R --out D k=v`` gives R, D and the override (argparse's intermixed parsing)."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._inside:  # intermixed parsing calls this twice: options first, then positionals
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def _count(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``low`` (and at most ``high``)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {shown(text)}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}, got {shown(value)}")
        return value
    return parse


def _number(low: float, high: float, *, above: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] (in (low, high] when ``above``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {shown(text)}") from None
        if not (low < value if above else low <= value) or not value <= high:  # NaN fails both
            side = f"above {low:g}" if above else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"must be a number {side} and at most {high:g}, got {shown(text)}")
        return value
    return parse



def _name_cells(lines: list[list[str]], n_ids: int) -> tuple[list[list[str]], list[int]]:
    """The identity cells with spaces around '+' (a narrow table wraps between modality names, never
    inside one), and each identity column's longest name (its least width)."""
    lines = [[c.replace("+", " + ") if i < n_ids else c for i, c in enumerate(line)] for line in lines]
    widths = [max((len(word) for line in lines for word in line[i].split()), default=1) for i in range(n_ids)]
    return lines, widths


def _rows_tables(rows: list[dict], title: str) -> list[Table]:
    """One table per task: a line per (target, query, ...) and a column per metric."""
    from polyalign.core.report_table import pivot_rows

    tables = []
    for pivot in pivot_rows(rows, interval_metrics={"accuracy"}):  # one interval per line keeps it narrow
        table = Table(title=escape(f"{title}: {pivot.task}"), caption=escape(pivot.caption()) or None)
        lines, widths = _name_cells(pivot.lines, pivot.n_ids)
        for i, c in enumerate(pivot.header):
            table.add_column(escape(c), justify="left" if i < pivot.n_ids else "right", overflow="fold",
                             min_width=max(widths[i], len(c)) if i < pivot.n_ids else None)
        for line in lines:
            table.add_row(*map(escape, line))
        tables.append(table)
    return tables


def _launch_train(args: argparse.Namespace) -> int:
    """``train --status RUN``, or ``train --launcher submitit-local|slurm``: one submitit job."""
    from polyalign.launch import SlurmOptions, job_status, parse_slurm_options, submit_training

    if args.status:
        out.print(job_status(Path(args.status)), markup=False, soft_wrap=True, highlight=False)
        return 0
    if args.resume is not None or args.recipe is None:
        raise PolyalignError(f"--launcher {args.launcher} needs a RECIPE: a launched run resumes itself when its job "
                             f"is requeued; to go on with a stopped one here: polyalign train --resume RUN_DIR")
    if args.launcher == "slurm" and args.tasks:
        raise PolyalignError("--tasks is for --launcher submitit-local; on Slurm a training runs one process per GPU "
                             "(--gpus-per-node)")
    import polyalign
    from polyalign.shipped import resolve_recipe_path

    recipe = polyalign.load_recipe(resolve_recipe_path(args.recipe), args.overrides)
    slurm = SlurmOptions(args.partition, args.time or 60, args.gpus_per_node, args.cpus_per_task, args.mem_gb,
                         args.nodes, parse_slurm_options(args.slurm_option or []))
    submitted = submit_training(recipe, args.out, args.launcher, slurm, args.tasks, args.force)
    out.print(f"submitted job {submitted.job.job_id} ({args.launcher}): run directory {submitted.run_dir}\n"
              f"  logs: {submitted.logs} (and one per process beside it)\n"
              f"  where it stands: polyalign train --status {submitted.run_dir}", markup=False, soft_wrap=True)
    if args.launcher == "slurm":
        return 0
    try:
        submitted.job.results()  # submitit-local: wait for every process, requeues included
    except Exception as exc:  # noqa: BLE001 - the job's own error was recorded by the job, its traceback logged
        from polyalign.launch import read_job

        said = read_job(submitted.run_dir).get("error") or str(exc).strip()[-1500:]
        raise PolyalignError(f"job {submitted.job.job_id} failed: {said} (logs: {submitted.logs})") from None
    _print_report(submitted.run_dir)
    out.print(f"run directory: [bold]{escape(str(submitted.run_dir))}[/bold]")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import polyalign
    from polyalign.evaluation.evaluate import EvaluatorsFailed
    from polyalign.shipped import resolve_recipe_path
    from polyalign.training.preemption import Stopped

    if args.launcher != "none" or args.status:
        return _launch_train(args)
    job_options = [flag for flag, value in (
        ("--nodes", args.nodes != 1), ("--gpus-per-node", args.gpus_per_node), ("--tasks", args.tasks),
        ("--partition", args.partition), ("--time", args.time), ("--cpus-per-task", args.cpus_per_task),
        ("--mem-gb", args.mem_gb), ("--slurm-option", args.slurm_option)) if value]
    if job_options:
        raise PolyalignError(f"{', '.join(job_options)}: for a job, with --launcher slurm (or submitit-local); "
                             f"without a launcher, train runs here")
    if args.recipe is None and args.resume is None:
        raise PolyalignError("train needs a RECIPE (a path or a name from `polyalign recipes`) or --resume RUN_DIR")
    if args.recipe is not None and args.resume is not None:
        raise PolyalignError(f"--resume continues {args.resume} with its own recipe.yaml; give no RECIPE "
                             f"({args.recipe}), only key.path=value overrides if needed")
    recipe = None if args.recipe is None else polyalign.load_recipe(resolve_recipe_path(args.recipe), args.overrides)
    try:
        run_dir = polyalign.train(recipe, out=args.out, resume=args.resume,
                                  overrides=args.overrides if args.resume else None, force=args.force)
    except Stopped as exc:  # a checkpoint was written at the step the signal stopped
        if int(os.environ.get("RANK", "0")) == 0:
            err.print(f"[yellow]stopped:[/yellow] {escape(str(exc))}", soft_wrap=True)
        return 128 + exc.signum  # as a process ended by the signal; a batch script may requeue on it
    except EvaluatorsFailed as exc:  # trained: show what the other evaluators produced, then the error
        if exc.run_dir is not None and int(os.environ.get("RANK", "0")) == 0:
            _print_report(exc.run_dir)
            out.print(f"run directory: [bold]{escape(str(exc.run_dir))}[/bold]")
        raise
    if int(os.environ.get("RANK", "0")) == 0:
        _print_report(run_dir)
        out.print(f"run directory: [bold]{run_dir}[/bold]")
    return 0


def _print_report(run_dir: Path) -> None:
    from polyalign.core.evaluator import read_report

    rows = read_report(Path(run_dir) / REPORT_DIR / REPORT_JSON, missing_ok=True)
    for table in _rows_tables(rows, f"evaluation ({Path(run_dir).name})"):
        out.print(table)


def _evaluator_node(text: str) -> dict:
    """``--add`` value: an evaluator name, or a YAML mapping with a ``plugin`` key."""
    from polyalign.files.yaml_file import parse_yaml

    node = parse_yaml(text, f"--add {shown(text)}")
    if isinstance(node, str):
        node = {"plugin": node}
    if not isinstance(node, dict) or not isinstance(node.get("plugin"), str):
        raise PolyalignError(f"--add {shown(text)}: give an evaluator name or a mapping like "
                             "'{plugin: missing_modality, targets: all}'")
    return node


def cmd_eval(args: argparse.Namespace) -> int:
    import polyalign
    from polyalign.evaluation.evaluate import EvaluatorsFailed

    added = [_evaluator_node(a) for a in args.add or []]
    try:
        polyalign.evaluate(args.run_dir, checkpoint=args.checkpoint, evaluators=added)
    except EvaluatorsFailed:
        _print_report(Path(args.run_dir))  # what the other evaluators produced, then the error
        raise
    _print_report(Path(args.run_dir))
    out.print(f"report: {Path(args.run_dir) / REPORT_DIR / REPORT_MD}")
    return 0


def _print_lines(title: str, header: list[str], lines: list[list[str]], caption: str, n_left: int) -> None:
    table = Table(title=escape(title), caption=escape(caption))
    for i, c in enumerate(header):
        table.add_column(escape(c), justify="left" if i < n_left else "right", overflow="fold")
    for line in lines:
        table.add_row(*map(escape, line))
    out.print(table)


def _headline_patterns(args: argparse.Namespace) -> list | None:
    from polyalign.evaluation.headline import parse_pattern

    return [parse_pattern(t) for t in args.headline] if args.headline else None


def _compare_paired(args: argparse.Namespace) -> int:
    from polyalign.evaluation.aggregate import run_dirs_in
    from polyalign.evaluation.compare import load_run
    from polyalign.evaluation.headline import default_patterns, paired_headline
    from polyalign.evaluation.paired import PAIRED_HEADER, RESAMPLES, paired_test, write_paired
    from polyalign.sweep.grid_values import configuration
    from polyalign.sweep.plan import is_sweep_dir, sweep_groups

    sweep = args.run_dirs[0] if is_sweep_dir(args.run_dirs[0]) else None
    if sweep and len(args.run_dirs) == 3:  # two configurations named by their grid values
        (a_label, a), (b_label, b) = (configuration(sweep, s) for s in args.run_dirs[1:])
    elif sweep and len(args.run_dirs) == 1:
        groups = {k: v for k, v in sweep_groups(sweep).items() if v}
        if len(groups) != 2:
            raise PolyalignError(f"--paired on a sweep compares two configurations; {sweep} has {len(groups)} "
                                 f"({'; '.join(groups)}). Name two by their grid values: polyalign compare "
                                 f"{sweep} --paired 'KEY=A' 'KEY=B'")
        (a_label, a), (b_label, b) = groups.items()
    elif len(args.run_dirs) == 2 and not sweep:
        (a_label, b_label), (a, b) = args.run_dirs, [run_dirs_in(d) for d in args.run_dirs]
    else:
        raise PolyalignError("--paired compares two sides: give A B (each a run directory or a folder of runs), a "
                             "sweep directory and two of its configurations by grid value (SWEEP 'KEY=A' 'KEY=B'), "
                             "or one sweep directory of two configurations")
    for label, side in ((a_label, a), (b_label, b)):
        if not side:
            raise PolyalignError(f"configuration {label}: no run of it has started yet")
    patterns = _headline_patterns(args) or default_patterns([load_run(d) for d in [*a, *b]])
    rows = [paired_headline(a, b, patterns)] if patterns else []
    rows += [r for metric in args.metric or ["accuracy"] for r in paired_test(a, b, metric)]
    _print_lines("paired comparison", PAIRED_HEADER, [r.line() for r in rows],
                 f"A = {a_label}; B = {b_label}; interval: paired bootstrap over seeds and tuples; p: paired "
                 f"permutation test ({RESAMPLES} sign flips)", 4)
    files = write_paired(rows, a_label, b_label, args.out)
    out.print("table: " + ", ".join(str(f) for f in files))
    return 0


def _print_headlines(args: argparse.Namespace, groups: dict[str, list]) -> None:
    """The headline of each configuration (the chosen rows' mean over runs, with its bootstrap interval)."""
    from polyalign.evaluation.headline import HEADLINE_HEADER, config_headline, default_patterns, pattern_text
    from polyalign.files.atomic import atomic_write_text

    patterns = _headline_patterns(args) or default_patterns([run for runs in groups.values() for run in runs])
    if patterns is None:
        return  # no default headline fits these reports; --headline names one
    found = [config_headline(label, runs, patterns) for label, runs in groups.items()]
    chosen = " ".join(pattern_text(p) for p in patterns)
    _print_lines("headline", HEADLINE_HEADER, [h.line() for h in found],
                 f"headline: mean of the rows {chosen}, then over the runs; 95% interval: percentile bootstrap "
                 f"(resampled: seeds, and test tuples within each seed where the runs kept their ranks)", 1)
    path = Path(args.out) / "headline.json"
    atomic_write_text(path, json.dumps({"headline": chosen, "configurations": [vars(h) for h in found]},
                                       indent=2) + "\n")
    out.print(f"headline: {path}")


def _compare_groups(args: argparse.Namespace) -> int:
    from polyalign.evaluation.aggregate import aggregate_groups, run_dirs_in
    from polyalign.sweep.plan import is_sweep_dir, sweep_groups

    groups: dict[str, list] = {}
    for d in args.run_dirs:
        found = sweep_groups(d) if is_sweep_dir(d) else {str(d): run_dirs_in(d)}
        groups.update({(f"{Path(d).name}: {k}" if len(args.run_dirs) > 1 else k): v for k, v in found.items()})
    result = aggregate_groups(groups, args.out, args.metric)
    for task, header, lines, n_left in result.tables():
        _print_lines(f"{task}: comparison of configurations", header, lines, result.caption(), n_left)
    for reason in result.skipped:
        err.print(f"[yellow]skipped:[/yellow] {escape(reason)}", soft_wrap=True)
    out.print("tables and plot: " + ", ".join(str(f) for f in result.files))
    _print_headlines(args, result.groups)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from polyalign.evaluation.compare import by_task, compare_runs
    from polyalign.files.run_files import RECIPE_FILE

    if args.paired:
        return _compare_paired(args)
    from polyalign.sweep.plan import is_sweep_dir

    folders = [Path(d).is_dir() and not (Path(d) / RECIPE_FILE).is_file() for d in args.run_dirs]
    if all(folders) or any(is_sweep_dir(d) for d in args.run_dirs):
        return _compare_groups(args)  # sweeps or folders of runs: configurations aggregated over their runs
    result = compare_runs(args.run_dirs, args.out, args.metric)
    n_runs = len(result.runs)
    for task, header, task_lines in by_task(result.header, result.lines, len(result.header) - n_runs):
        table = Table(title=escape(f"{task}: comparison" if task else "comparison"),
                      caption=escape("value [bootstrap interval]; — = no such row in that run"))
        n_ids = len(header) - n_runs
        lines, widths = _name_cells(task_lines, n_ids)
        for i, c in enumerate(header):
            table.add_column(escape(c), justify="right" if i >= n_ids else "left", overflow="fold",
                             min_width=max(widths[i], len(c)) if i < n_ids else None)
        for line in lines:
            table.add_row(*map(escape, line))
        out.print(table)
    for run in result.runs:
        out.print(f"{escape(run.label)}: {escape(str(run.run_dir))}")
    for reason in result.skipped:
        err.print(f"[yellow]skipped:[/yellow] {escape(reason)}", soft_wrap=True)
    out.print(f"table: {result.markdown}" + (f"\nplot: {result.figure}" if result.figure else ""))
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from polyalign.shipped import resolve_recipe_path

    path = resolve_recipe_path(args.recipe)  # a name that is no recipe is said before torch loads

    import polyalign
    from polyalign.core.plugin_manager import default_plugins
    from polyalign.core.requirements import check_requirements

    recipe = polyalign.load_recipe(path, args.overrides)
    check_requirements(recipe, default_plugins(), args.recipe)
    lines = None
    if args.check_data:  # before the "valid" line: a recipe its data refuses is not valid
        from polyalign.commands.data_check import check_data
        from polyalign.core.machine_fit import check_fit

        check_fit(recipe, default_plugins(), args.recipe)  # building the plugins must not exhaust the machine
        lines = check_data(recipe)
    if args.print:
        print(recipe.to_yaml())
    out.print(f"{args.recipe}: valid ({len(recipe.modalities)} modalities, "
              f"loss {'+'.join(n.plugin for n in recipe.losses)}, data {recipe.data.plugin})")
    _print_fit(recipe)
    if lines is not None:
        out.print("checked with the data (every plugin built, every row's files found, a sample of each split decoded):\n"
                  + "\n".join(f"  {escape(line)}" for line in lines), soft_wrap=True)
    return 0


def _print_fit(recipe) -> None:
    """What each ``auto`` of the recipe stands for here, and whether the valid recipe fits this machine
    (core/machine_fit.py): its memory and one loss step's cost."""
    from polyalign.core.assemble import build_loss
    from polyalign.core.device import pick_device
    from polyalign.core.machine_fit import fit_lines
    from polyalign.core.plugin_manager import default_plugins
    from polyalign.training.auto_values import autos_text, resolved_autos

    try:
        device = pick_device(recipe.train.device)
    except PolyalignError:  # validating for a device this machine lacks: its own rate stands in
        device = pick_device("cpu")
    plugins = default_plugins()
    loss = build_loss(recipe, plugins)
    lines = fit_lines(recipe, plugins, loss, device) + autos_text(resolved_autos(recipe, loss, device))
    out.print("on this machine (apart from validity):\n" + "\n".join(f"  {escape(line)}" for line in lines),
              soft_wrap=True)


def _plugin_options(name: str, as_json: bool) -> int:
    """``polyalign plugins NAME``: every component registered under NAME, with its options."""
    from polyalign.commands.options_reference import component_lines, options
    from polyalign.core.plugin_manager import default_plugins
    from polyalign.core.registry import KINDS, unknown_name_message

    registry = default_plugins().registry
    found = [registry.get(kind, name) for kind in KINDS if name in registry.names(kind)]
    if not found:
        every = sorted({n for kind in KINDS for n in registry.names(kind)})
        raise PolyalignError(unknown_name_message("plugin component", name, every))
    if as_json:
        print(json.dumps([{"kind": c.kind, "name": c.name, "plugin": c.plugin, "description": c.description,
                           "options": [o.__dict__ for o in options(c.config)]} for c in found], indent=2))
        return 0
    blocks = []
    for c in found:
        missing = _not_installed(c.requires)
        blocks.append("\n".join(component_lines(c) + ([f"  {missing}"] if missing else [])))
    out.print("\n\n".join(blocks), markup=False, highlight=False, soft_wrap=True)
    return 0


def _not_installed(requires: dict[str, str]) -> str:
    """'not installed: pip install ...' for each module a component needs and this environment lacks."""
    from polyalign.core.requirements import install_hint, is_installed

    missing = [install_hint(r) for m, r in requires.items() if not is_installed(m)]
    return f"not installed: {'; '.join(missing)}" if missing else ""


def cmd_plugins(args: argparse.Namespace) -> int:
    from polyalign.core.plugin_manager import default_plugins, describe

    if args.name is not None:
        return _plugin_options(args.name, args.json)
    listing = describe(default_plugins())
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    table = Table(title="plugins")
    for c in ("name", "distribution", "version", "status"):
        table.add_column(c)
    for p in listing["plugins"]:
        status = "[red]" + escape(p["error"]) + "[/red]" if p["error"] else ("built-in" if p["builtin"] else "loaded")
        table.add_row(escape(p["name"]), escape(p["distribution"]), escape(p["version"]), status)
    out.print(table)
    for kind in ("encoders", "losses", "datasets", "evaluators", "loggers"):
        t = Table(title=kind)
        t.add_column("name", style="bold")
        t.add_column("plugin")
        t.add_column("description")
        for c in listing[kind]:
            missing = _not_installed(c["requires"])
            t.add_row(escape(c["name"]), escape(c["plugin"]),  # a description may hold [extra]: escaped
                      escape(c["description"]) + (f"\n[yellow]{escape(missing)}[/yellow]" if missing else ""))
        out.print(t)
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from polyalign.files.atomic import atomic_write_text
    from polyalign.shipped import recipe_summary, shipped_recipes

    recipes = shipped_recipes()
    if args.action == "cp":
        if args.name not in recipes:
            from polyalign.core.registry import unknown_name_message
            raise PolyalignError(unknown_name_message("recipe", args.name, list(recipes)))
        dest = Path(args.dest or f"{args.name}.yaml")
        if dest.is_dir():
            dest = dest / f"{args.name}.yaml"
        if dest.exists():
            raise PolyalignError(f"{dest} exists; not overwriting it")
        atomic_write_text(dest, recipes[args.name].read_text(encoding="utf-8"))
        out.print(f"copied {args.name} to {dest}")
        return 0
    summaries = {name: recipe_summary(path) for name, path in recipes.items()}
    longest = max((len(command) for command, _ in summaries.values()), default=0)
    table = Table(title="shipped recipes")
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("description", min_width=30)
    table.add_column("command", no_wrap=True, min_width=longest)  # the column people copy: never cut
    for name, (command, description) in summaries.items():
        table.add_row(escape(name), escape(description), escape(command))
    # Piped, rich assumes 80 columns; widen to what the whole commands need.
    wide = max(out.width, max(map(len, recipes), default=0) + longest + 40)
    (out if out.is_terminal else Console(highlight=False, width=wide)).print(table)
    return 0


def cmd_demo_data(args: argparse.Namespace) -> int:
    from polyalign.plugins.datasets.demo import class_names, write_demo

    folder = Path(args.dir)
    if folder.exists() and not folder.is_dir():
        raise PolyalignError(f"{folder} exists and is not a folder; give a new or empty folder for the demo data")
    if folder.exists() and any(folder.iterdir()):
        raise PolyalignError(f"{folder} is not empty; give a new or empty folder for the demo data")
    write_demo(folder, args.classes, args.n_train, args.n_val, args.n_test, args.missing_rate, args.seed,
               args.flip_rate)
    names = shlex.quote(f"data.label_names=[{', '.join(class_names(args.classes))}]")  # the labels are numbers
    out.print(f"wrote the demo dataset to {folder} (manifests train/val/test.jsonl). Train on it with:\n"
              f"  polyalign train demo-multimodal data.plugin=manifest data.path={shlex.quote(str(folder))} {names}",
              markup=False, soft_wrap=True)
    return 0


def cmd_shards(args: argparse.Namespace) -> int:
    from polyalign.plugins.datasets.shards import write_shards

    written = write_shards(args.data_dir, args.out_dir, args.shard_size, args.seed, shuffle=not args.no_shuffle)
    table = Table(title=escape(f"shards in {args.out_dir}"))
    for c in ("split", "tuples", "shards", "pattern"):
        table.add_column(c, justify="right" if c in ("tuples", "shards") else "left", overflow="fold")
    for split in written:
        table.add_row(split.split, str(split.samples), str(len(split.shards)), escape(split.pattern))
    out.print(table)
    extensions: dict[str, set[str]] = {}
    for split in written:
        for m, exts in split.extensions.items():
            extensions.setdefault(m, set()).update(exts)
    modalities = ", ".join(f"{m}: {';'.join(sorted(e))}" for m, e in extensions.items() if e)
    lines = ["data:", "  plugin: webdataset"] + [f"  {s.split}: {s.pattern}" for s in written]
    lines.append(f"  modalities: {{{modalities}}}")
    out.print(f"put this in a recipe (or data.path: {args.out_dir} in place of the patterns):", markup=False,
              soft_wrap=True)
    out.print("\n".join(lines), markup=False, soft_wrap=True, highlight=False)
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    import polyalign
    from polyalign.shipped import resolve_recipe_path
    from polyalign.training.cache_fill import fill_caches

    recipe = polyalign.load_recipe(resolve_recipe_path(args.recipe), args.overrides)
    filled = fill_caches(recipe)
    table = Table(title=escape(f"caches of {recipe.name}"))
    for c in ("cache", "modality", "computed now", "entries", "folder"):
        table.add_column(c, justify="right" if c in ("computed now", "entries") else "left", overflow="fold")
    for f in filled:
        table.add_row(f.kind, escape(f.modality), str(f.computed), str(f.entries), escape(str(f.folder)))
    out.print(table)
    return 0


def _device(name: str) -> str:
    """The ``--device`` value, checked here so that its errors name the flag."""
    from polyalign.core.device import pick_device

    return str(pick_device(name, option="--device"))


def cmd_embed(args: argparse.Namespace) -> int:
    import polyalign
    from polyalign.inference.search import embed_to_file

    model = polyalign.load(args.run_dir, checkpoint=args.checkpoint, device=_device(args.device))
    source = args.input if args.value is None else args.value
    path, n = embed_to_file(model, args.modality, source, args.out, args.batch_size, single=args.value is not None)
    out.print(f"embedded {n} {escape(args.modality)} value(s) from {escape(str(source))} -> "
              f"{escape(str(path))} ({n} x {model.embed_dim}; ids in the file's metadata)")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    import polyalign
    from polyalign.inference.search import index_to_file
    from polyalign.inference.vector_index import IndexOptions

    options = IndexOptions(args.kind, args.nlist, args.nprobe, args.hnsw_m, args.ef_search)
    options.check()
    model = polyalign.load(args.run_dir, checkpoint=args.checkpoint, device=_device(args.device))
    report = index_to_file(model, args.modality, args.input, args.out, options, args.batch_size)
    quality = ("exact inner-product search" if report.recall is None else
               f"recall@10 = {report.recall:.3f} against exact search, measured with {report.recall_queries} "
               f"of its vectors as queries")
    out.print(f"indexed {report.count} {escape(args.modality)} embedding(s) from {escape(str(args.input))} -> "
              f"{escape(str(report.path))} ({args.kind} index: {quality}). Search it with --candidates "
              f"{escape(args.modality)}={escape(str(report.path))}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    import polyalign
    from polyalign.inference.search import search_sources, show_value

    model = polyalign.load(args.run_dir, checkpoint=args.checkpoint, device=_device(args.device))
    result = search_sources(model, args.query, args.candidates, args.top)
    out.print(escape("query: " + ", ".join(f"{m}={show_value(v)}" for m, v in result.query.items())
                     + f" (scored by {type(model.loss).__name__}.score, the run's own rule)"))
    found, hits = result.candidates, result.hits
    shown = [found.text(h.index) if found.text(h.index) is not None
             else show_value(found.values[h.index]) if found.values is not None else None for h in hits]
    columns = {"label": [found.label(h.index) for h in hits],
               "text" if any(found.text(h.index) is not None for h in hits) else "value":
                   shown if any(v is not None and v != str(h.id) for v, h in zip(shown, hits)) else [None] * len(hits),
               "same value as": [", ".join(map(str, h.same)) or None for h in hits]}
    columns = {name: cells for name, cells in columns.items() if any(c is not None for c in cells)}
    table = Table(title=escape(f"best {result.target} of {result.n_candidates}"))
    table.add_column("rank", justify="right")
    table.add_column("id")
    for name in columns:
        table.add_column(name, overflow="fold")
    table.add_column("score", justify="right")
    for i, hit in enumerate(hits):
        cells = ["" if cells[i] is None else escape(str(cells[i])) for cells in columns.values()]
        table.add_row(str(hit.rank), escape(str(hit.id)), *cells, f"{hit.score:.4f}")
    out.print(table)
    if found.repeats:
        out.print(f"{found.repeats} of the {result.n_candidates} candidates repeat another's value: each value is "
                  f"ranked once, its other ids under 'same value as'")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from polyalign.inference.export import export_model

    dest = export_model(args.run_dir, args.dest, checkpoint=args.checkpoint, format=args.format)
    graphs = sorted(p.name for p in dest.glob("*.onnx"))
    out.print(f"exported {escape(str(args.run_dir))} ({args.checkpoint} checkpoint) to {escape(str(dest))}: "
              f"model.safetensors, recipe.yaml, MODEL_CARD.md{''.join(', ' + escape(g) for g in graphs)}; "
              f"load it with polyalign.load({str(dest)!r})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from polyalign.serving.app import ServeSettings
    from polyalign.serving.limits import Limits
    from polyalign.serving.server import default_threads, resolve_token, serve

    token, made = resolve_token(args.token)
    limits = Limits(args.max_body_mb, args.max_values, args.max_k, args.max_batch, args.batch_wait_ms,
                    args.max_decoded_millions)
    settings = ServeSettings(args.run_dir, args.checkpoint, _device(args.device), args.candidates, args.index,
                             limits, token, args.threads or default_threads(args.workers))
    if made:
        out.print(f"bearer token (send 'Authorization: Bearer TOKEN'; set POLYALIGN_SERVE_TOKEN to choose it): "
                  f"{token}", markup=False, soft_wrap=True)
    serve(settings, args.host, args.port, args.workers, say=lambda *a, **k: out.print(*a, markup=False))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from polyalign.evaluation.training_plots import plot_runs

    if args.embeddings:
        from polyalign.evaluation.embedding_plot import plot_embeddings

        if len(args.run_dirs) > 1:
            raise PolyalignError(f"plot --embeddings draws one run's embeddings; got {len(args.run_dirs)} runs, "
                                 f"give one")
        path = plot_embeddings(args.run_dirs[0], args.out, args.checkpoint, args.split)
        out.print(f"plot: {escape(str(path))}")
        return 0
    default = Path(args.run_dirs[0]) / "training.png" if len(args.run_dirs) == 1 else Path("training.png")
    path = plot_runs(args.run_dirs, args.out or default)
    out.print(f"plot: {escape(str(path))}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from polyalign.shipped import resolve_recipe_path

    if args.status:
        from polyalign.sweep.progress import sweep_progress

        out.print(sweep_progress(args.status).text(), markup=False, soft_wrap=True)
        return 0
    if args.recipe is None:
        raise PolyalignError("sweep needs a RECIPE (a path or a name from `polyalign recipes`), or --status SWEEP_DIR")
    from polyalign.launch import SlurmOptions

    slurm = SlurmOptions(args.partition, args.time, args.gpus_per_node, args.cpus_per_task, args.mem_gb)

    def echo(line: str) -> None:
        out.print(line, markup=False, soft_wrap=True, highlight=False)

    from polyalign.sweep.plan import read_sweep_file

    recipe = resolve_recipe_path(args.recipe)
    written = read_sweep_file(recipe) if recipe.is_file() else None
    if written is not None:  # a sweep file: its grid, seeds and overrides, then the command line's
        recipe, args.grid = written.recipe, [*written.grid, *(args.grid or [])]
        args.overrides = [*written.overrides, *args.overrides]
        args.seeds = args.seeds or written.seeds
    args.seeds = args.seeds or 1
    if args.search:
        from polyalign.sweep.optuna_search import run_search

        found = run_search(recipe, args.grid or [], args.trials, args.metric, args.direction, args.overrides,
                           args.out, args.jobs, args.threads, args.launcher, slurm, echo, storage=args.storage)
        out.print(found.text(), markup=False, soft_wrap=True)
        if found.best_recipe is None:
            raise PolyalignError(f"no trial of the search completed (see the failed trials above and the study in "
                                 f"{found.sweep_dir}); the same command resumes it")
        return 0
    from polyalign.sweep.plan import parse_grid
    from polyalign.sweep.runner import run_sweep

    result = run_sweep(recipe, parse_grid(args.grid), args.seeds, args.overrides, args.out, args.jobs,
                       args.threads, args.launcher, slurm, echo)
    if result.failed:
        raise PolyalignError(f"{len(result.failed)} run(s) of the sweep failed (their errors above and in "
                             f"{result.sweep_dir}/runs/*/*/status.json); the same command tries them again")
    if result.elsewhere:
        echo(f"{len(result.elsewhere)} run(s) are running in another process (another sweep on this folder); "
             f"`polyalign sweep --status {result.sweep_dir}` shows when they end")
    echo(f"sweep directory: {result.sweep_dir}\ncompare its configurations: polyalign compare {result.sweep_dir}")
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``polyalign``."""
    p = _Parser(prog="polyalign", description="Contrastive learning over any number of modalities.")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_CommandParser)

    t = sub.add_parser("train", help="train a recipe, then evaluate it")
    t.add_argument("recipe", nargs="?", help="recipe file or shipped recipe name")
    t.add_argument("overrides", nargs="*", help="key.path=value overrides")
    t.add_argument("--out", help="folder for run directories (default: runs/)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    t.add_argument("--force", action="store_true", help="train even when the recipe needs more memory than this "
                                                       "machine has (`polyalign validate` shows the estimate)")
    # on a cluster: one submitit job (docs/scaling-out.md)
    t.add_argument("--launcher", choices=["none", "submitit-local", "slurm"], default="none",
                   help="none = this process (or torchrun's); slurm = one Slurm job of one process per GPU that "
                        "checkpoints and requeues itself when preempted; submitit-local = --tasks processes here (default: none)")
    t.add_argument("--nodes", type=_count(1), default=1, help="slurm: nodes (default 1)")
    t.add_argument("--gpus-per-node", type=_count(0), default=0, help="slurm: GPUs per node (one process each)")
    t.add_argument("--tasks", type=_count(1), help="submitit-local: processes")
    t.add_argument("--partition", help="slurm: partition")
    t.add_argument("--time", type=_count(1), metavar="MINUTES", help="slurm: time limit of one job, default 60 "
                   "(a job that reaches it checkpoints and is requeued)")
    t.add_argument("--cpus-per-task", type=_count(1), help="slurm: CPUs per process")
    t.add_argument("--mem-gb", type=_number(0, 1e6, above=True), help="slurm: memory per node")
    t.add_argument("--slurm-option", action="append", metavar="KEY=VALUE",
                   help="slurm: any other sbatch option, e.g. account=mylab or qos=high (repeatable)")
    t.add_argument("--status", metavar="RUN_DIR", help="say where a launched run stands: queued, running on N "
                                                      "nodes, requeued k times, finished; runs nothing")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a run directory with its recipe's evaluators")
    e.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (its recipe.yaml names the evaluators)")
    e.add_argument("--checkpoint", default="last", choices=["last", "best"],
                   help="which weights to evaluate (default: last; best = the lowest validation loss)")
    e.add_argument("--add", action="append", metavar="EVALUATOR",
                   help="run only this evaluator (a name or a YAML mapping, e.g. "
                        "'{plugin: missing_modality, targets: all}') and merge its rows into the run's report, "
                        "replacing those of an earlier run of it with the same options; repeatable")
    e.set_defaults(func=cmd_eval)

    c = sub.add_parser("compare", help="compare the evaluation reports of several runs: one table, one plot; a "
                                       "sweep directory: mean and 95%% interval over seeds per configuration")
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories, or a sweep directory (or a "
                                                                  "folder of runs) to aggregate over seeds")
    c.add_argument("--out", default=".", help="folder for compare.md and compare.png (default: current folder)")
    c.add_argument("--metric", action="append", help="only this metric (repeatable; default: every metric; "
                                                     "with --paired: accuracy)")
    c.add_argument("--paired", action="store_true",
                   help="test A against B on the same test tuples (runs matched by seed): difference, 95%% "
                        "interval (paired bootstrap) and p-value (paired permutation test); on a sweep, name "
                        "the two configurations by grid value: SWEEP --paired 'loss=clip' 'loss=[clip, symile]'")
    c.add_argument("--headline", action="append", metavar="TASK/TARGET_from_QUERY/METRIC",
                   help="the rows whose mean is each configuration's headline, as shell patterns (repeatable; "
                        "QUERY 'rest' = every other modality; default: zero_shot/*_from_rest/accuracy, else "
                        "retrieval/*_from_rest/R@1)")
    c.set_defaults(func=cmd_compare)

    v = sub.add_parser("validate", help="check a recipe and report every problem at once")
    v.add_argument("recipe", help="recipe file or shipped recipe name")
    v.add_argument("overrides", nargs="*", help="key.path=value overrides")
    v.add_argument("--print", action="store_true", help="print the resolved recipe")
    v.add_argument("--check-data", action="store_true",
                   help="also build every plugin, check that every file each row names is there (a stat; streamed "
                        "shards excepted) and load, collate and embed a sample of rows of each split")
    v.set_defaults(func=cmd_validate)

    pl = sub.add_parser("plugins", help="list loaded plugins and registered components, or one component's options")
    pl.add_argument("name", nargs="?", metavar="NAME",
                    help="print the options of the component(s) of this name: type, default, constraints")
    pl.add_argument("--json", action="store_true", help="print the listing (or the options) as JSON")
    pl.set_defaults(func=cmd_plugins)

    r = sub.add_parser("recipes", help="list shipped recipes, or copy one: recipes cp NAME [DEST]")
    r.add_argument("action", nargs="?", choices=["ls", "cp"], default="ls",
                   help="ls = list the shipped recipes (default); cp = copy recipe NAME to DEST")
    r.add_argument("name", nargs="?", metavar="NAME", help="cp: the shipped recipe to copy")
    r.add_argument("dest", nargs="?", metavar="DEST", help="cp: a file or folder (default: ./NAME.yaml)")
    r.set_defaults(func=cmd_recipes)

    dd = sub.add_parser("demo-data", help="write the demo dataset (PNG, WAV, .npy ECG, .txt + manifests) to DIR")
    dd.add_argument("dir", metavar="DIR", help="a new (or empty) folder")
    dd.add_argument("--classes", type=_count(2), default=4, help="classes shared by the modalities (2-8; default 4)")
    dd.add_argument("--n-train", type=_count(1, DEMO_MAX_ROWS), default=600, help="train tuples (default 600)")
    dd.add_argument("--n-val", type=_count(0, DEMO_MAX_ROWS), default=100, help="validation tuples (default 100)")
    dd.add_argument("--n-test", type=_count(0, DEMO_MAX_ROWS), default=200, help="test tuples (default 200)")
    dd.add_argument("--missing-rate", type=_number(0, 1), default=0.1, help="chance a train modality is left out (default 0.1)")
    dd.add_argument("--seed", type=_count(0), default=0, help="seed of the generated data (default 0)")
    dd.add_argument("--flip-rate", type=_number(0, 1), default=0.15, help="chance a modality shows another class (default 0.15)")
    dd.set_defaults(func=cmd_demo_data)

    sh = sub.add_parser("shards", help="write a manifest folder as webdataset tar shards (one set per split)")
    sh.add_argument("data_dir", metavar="DATA_DIR", help="a folder with train/val/test .jsonl or .csv manifests")
    sh.add_argument("out_dir", metavar="OUT_DIR", help="a new (or empty) folder for the shards and sizes.json")
    sh.add_argument("--shard-size", type=int, default=1000, metavar="N", help="tuples per shard (default 1000)")
    sh.add_argument("--seed", type=int, default=0, help="seed of the shuffle of the train tuples")
    sh.add_argument("--no-shuffle", action="store_true", help="keep the train manifest's order")
    sh.set_defaults(func=cmd_shards)

    ca = sub.add_parser("cache", help="fill a recipe's feature cache (frozen encoders) and disk input cache")
    ca.add_argument("recipe", help="recipe file or shipped recipe name (with cache.features or cache.inputs=disk)")
    ca.add_argument("overrides", nargs="*", help="key.path=value overrides")
    ca.set_defaults(func=cmd_cache)

    use = {"checkpoint": dict(default="last", choices=["last", "best"],
                              help="weights of a run directory (default: last, the ones its evaluation used)"),
           "device": dict(default="auto", help="auto (CUDA if available; the default), cpu, cuda, cuda:1...")}
    em = sub.add_parser("embed", help="embed a folder, manifest or array of one modality with a trained model")
    em.add_argument("run_dir", metavar="RUN_DIR", help="a run directory or a folder written by `polyalign export`")
    em.add_argument("--modality", required=True, help="the modality of the values (a name in the run's recipe)")
    given = em.add_mutually_exclusive_group(required=True)
    given.add_argument("--input", metavar="SOURCE",
                       help="a folder of files (one value each), a manifest (.csv/.jsonl), a .npy array (one value "
                            "per row of its first axis) or a .txt file (one value per line)")
    given.add_argument("--value", metavar="VALUE",
                       help="one value: a file holding one value (e.g. a whole recording as .npy), text or [numbers]")
    em.add_argument("--out", required=True, metavar="FILE.safetensors",
                    help="embeddings (tensor 'embeddings'); ids, modality and model in its metadata")
    em.add_argument("--batch-size", type=_count(1), default=None,
                    help="values per model run (default: the run's train.batch_size)")
    for name, kw in use.items():
        em.add_argument(f"--{name}", **kw)
    em.set_defaults(func=cmd_embed)

    ix = sub.add_parser("index", help="build a faiss index over the embeddings of one modality, for search")
    ix.add_argument("run_dir", metavar="RUN_DIR", help="a run directory or a folder written by `polyalign export`")
    ix.add_argument("--modality", required=True, help="the modality of the values (a name in the run's recipe)")
    ix.add_argument("--input", required=True, metavar="SOURCE",
                    help="a folder, manifest (.csv/.jsonl), .npy array, .txt lines or an embeddings file "
                         "from `polyalign embed`")
    ix.add_argument("--out", required=True, metavar="FILE.faiss",
                    help="the index; its ids and provenance go to FILE.faiss.json beside it, its hash to "
                         "FILE.faiss.hashed")
    ix.add_argument("--kind", choices=["flat", "ivf", "hnsw"], default="flat",
                    help="flat = exact inner product (default); ivf, hnsw = approximate, faster on millions")
    ix.add_argument("--nlist", type=int, default=None, help="ivf: clusters (default about 4 x sqrt(N))")
    ix.add_argument("--nprobe", type=int, default=16, help="ivf: clusters searched per query (default 16)")
    ix.add_argument("--hnsw-m", type=int, default=32, help="hnsw: links per vector (default 32)")
    ix.add_argument("--ef-search", type=int, default=64, help="hnsw: candidate list per query (default 64)")
    ix.add_argument("--batch-size", type=_count(1), default=None,
                    help="values per model run (default: the run's train.batch_size)")
    for name, kw in use.items():
        ix.add_argument(f"--{name}", **kw)
    ix.set_defaults(func=cmd_index)

    se = sub.add_parser("search", help="rank candidates of one modality for a query of others")
    se.add_argument("run_dir", metavar="RUN_DIR", help="a run directory or a folder written by `polyalign export`")
    se.add_argument("--query", action="append", default=[], metavar="MODALITY=VALUE",
                    help="an existing file, [numbers] or else text; repeat for several query modalities (at least one)")
    se.add_argument("--candidates", required=True, metavar="MODALITY=SOURCE",
                    help="a folder, manifest (.csv/.jsonl), .npy array, .txt lines, an embeddings file "
                         "from `polyalign embed` or an index from `polyalign index` (.faiss)")
    se.add_argument("--top", type=_count(1), default=5, help="candidates to show, best first (default 5)")
    for name, kw in use.items():
        se.add_argument(f"--{name}", **kw)
    se.set_defaults(func=cmd_search)

    ex = sub.add_parser("export", help="write a self-contained model folder: weights, recipe, model card (and ONNX)")
    ex.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")
    ex.add_argument("dest", metavar="DIR", help="a new (or empty) folder")
    ex.add_argument("--checkpoint", **use["checkpoint"])
    ex.add_argument("--format", choices=["safetensors", "onnx"], default="safetensors",
                    help="safetensors = weights only (default); onnx: also one MODALITY.onnx graph per modality (encoder + "
                         "head + normalisation; needs pip install 'polyalign[onnx]')")
    ex.set_defaults(func=cmd_export)

    sv = sub.add_parser("serve", help="serve a trained model over HTTP: /embed, /search, a search page at /")
    sv.add_argument("run_dir", metavar="RUN_OR_EXPORT",
                    help="a run directory or a folder written by `polyalign export`")
    sv.add_argument("--candidates", action="append", default=[], metavar="MODALITY=SOURCE",
                    help="what /search ranks: a folder, manifest, .npy, .txt or embeddings file, embedded at start; "
                         "repeatable (one per modality)")
    sv.add_argument("--index", action="append", default=[], metavar="MODALITY=FILE.faiss",
                    help="what /search ranks: an index from `polyalign index`; repeatable")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=_count(0, 65535), default=8000,
                    help="port to listen on (default 8000; 0 = any free port)")
    sv.add_argument("--token", action="store_true",
                    help="require 'Authorization: Bearer TOKEN' on every route but /health (the token: "
                         "$POLYALIGN_SERVE_TOKEN, which also turns this on, or a new one printed at start)")
    sv.add_argument("--workers", type=_count(1), default=1, help="processes, each with its own copy of the model (default 1)")
    sv.add_argument("--threads", type=_count(1), default=None,
                    help="torch threads per worker (default: cores / workers - 1, at least 1)")
    sv.add_argument("--max-body-mb", type=_number(0, 4096, above=True), default=16.0,
                    help="largest request body (default 16 MB, at most 4096; 413 above)")
    sv.add_argument("--max-values", type=_count(1), default=64, help="values per request (default 64; 413 above)")
    sv.add_argument("--max-k", type=_count(1), default=100, help="largest k of a search (default 100; 422 above)")
    sv.add_argument("--max-decoded-millions", type=_number(0, 100_000, above=True), default=200.0,
                    help="numbers the uploads of one request may decode to, in millions (image pixels x bands, "
                         "audio samples, .npy entries; read from their headers before decoding; default 200; "
                         "413 above)")
    sv.add_argument("--max-batch", type=_count(1), default=64, help="requests batched into one model run (default 64)")
    sv.add_argument("--batch-wait-ms", type=_number(0, 1000), default=2.0,
                    help="how long a batch waits for more requests after its first (default 2 ms, at most 1000)")
    for name, kw in use.items():
        sv.add_argument(f"--{name}", **kw)
    sv.set_defaults(func=cmd_serve)

    pt = sub.add_parser("plot", help="plot loss, temperature, learning rate and evaluation of runs, or (--embeddings) "
                                     "one run's learned space (PNG)")
    pt.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="one or more runs, overlaid")
    pt.add_argument("--out", metavar="FILE.png",
                    help="default: RUN_DIR/training.png for one run, ./training.png for several, "
                         "RUN_DIR/embeddings.png with --embeddings")
    pt.add_argument("--embeddings", action="store_true",
                    help="draw the run's embeddings of every modality in 2-D (t-SNE; PCA without scikit-learn), "
                         "coloured by modality and by label")
    pt.add_argument("--checkpoint", default="last", choices=["last", "best"],
                    help="with --embeddings: the weights to embed with (default: last)")
    pt.add_argument("--split", default="test", choices=["train", "val", "test"],
                    help="with --embeddings: the split to draw (default: test)")
    pt.set_defaults(func=cmd_plot)
    sw = sub.add_parser("sweep", help="run a recipe's grid x seeds (or an Optuna search) as runs in one sweep "
                                      "directory; resumable; --status DIR shows its progress")
    sw.add_argument("recipe", nargs="?", help="recipe file or shipped recipe name, or a sweep file (recipe: FILE "
                                              "and a sweep: block of grid, seeds, overrides)")
    sw.add_argument("overrides", nargs="*", help="key.path=value overrides every run shares")
    sw.add_argument("--grid", action="append", metavar="KEY=V1,V2",
                    help="values of one key (repeatable: the runs are every combination); with --search optuna "
                         "also KEY=LOW..HIGH or KEY=LOW..HIGH/log for a range")
    sw.add_argument("--seeds", type=_count(1), help="seeds per configuration: S, S+1, ... from the recipe's "
                                                   "seed S (default 1)")
    sw.add_argument("--jobs", type=_count(1), default=1, help="runs at once (default 1)")
    sw.add_argument("--threads", type=_count(1), help="threads per run (default: the cores shared by the jobs)")
    sw.add_argument("--out", metavar="SWEEP_DIR", help="the sweep directory (default: sweeps/<recipe name>)")
    sw.add_argument("--launcher", choices=["local", "submitit-local", "slurm"], default="local",
                    help="local = processes here (default); submitit-local / slurm = submitit jobs (pip install "
                         "'polyalign[sweep]'; for slurm the sweep directory must be on shared storage)")
    sw.add_argument("--partition", help="slurm: partition")
    sw.add_argument("--time", type=_count(1), default=60, metavar="MINUTES", help="slurm: time limit per run (default 60)")
    sw.add_argument("--gpus-per-node", type=_count(0), default=0, help="slurm: GPUs per run")
    sw.add_argument("--cpus-per-task", type=_count(1), help="slurm: CPUs per run (default: --threads)")
    sw.add_argument("--mem-gb", type=_number(0, 1e6, above=True), help="slurm: memory per run")
    sw.add_argument("--status", metavar="SWEEP_DIR", help="show a sweep's runs done, running, failed, and the "
                                                          "time left; runs nothing")
    sw.add_argument("--search", choices=["optuna"], help="search the --grid space with Optuna (TPE, pruning on "
                                                         "the validation loss) instead of running every point")
    sw.add_argument("--trials", type=_count(1), default=20, help="--search: trials in all (default 20)")
    sw.add_argument("--metric", metavar="ROW", help="--search: the evaluation row to optimise on the validation "
                                                    "split, e.g. zero_shot/b_from_a+c/accuracy")
    sw.add_argument("--direction", choices=["maximize", "minimize"], default="maximize",
                    help="--search: whether --metric is better high (default: maximize) or low")
    sw.add_argument("--storage", metavar="URL", help="--search: the study's database (an SQLAlchemy URL such as "
                                                     "postgresql://host/db; default: SQLite in the sweep directory)")
    sw.set_defaults(func=cmd_sweep)
    for command in sub.choices.values():  # `polyalign train --debug ...` as well as `polyalign --debug train ...`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return p


def notices_as_lines(show: Callable[..., None]) -> Callable[..., None]:
    """A ``warnings.showwarning`` printing a :class:`Notice` as one ``note:`` line and passing
    every other warning to ``show``."""
    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, Notice):
            err.print(f"[yellow]note:[/yellow] {escape(str(message))}", soft_wrap=True)
        else:
            show(message, category, filename, lineno, file, line)
    return show_warning


def _as_error(exc: BaseException) -> tuple[PolyalignError, int]:
    """``exc`` as the error the CLI prints (cut once, where every :class:`PolyalignError` is made), and its exit
    code: 2 for the input or the machine, 1 for a bug."""
    if isinstance(exc, PolyalignError):
        return exc, 2
    if isinstance(exc, OSError):  # the machine, not the code: a full disk, a missing permission...
        from polyalign.files.atomic import os_error_message

        return PolyalignError(os_error_message(exc)), 2
    if isinstance(exc, MemoryError):
        return PolyalignError(f"out of memory ({exc or 'MemoryError'}); use smaller inputs or settings"), 2
    return PolyalignError(f"unexpected {type(exc).__name__}: {exc}. This is a bug in polyalign or in a plugin; run "
                          f"the command again with --debug to see where it happened, and report it."), 1


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors print one message and exit 2, bugs exit 1 (with ``--debug`` or
    ``POLYALIGN_DEBUG=1`` the full traceback is printed first)."""
    wait_passively()  # before anything imports torch: OpenMP reads the policy once
    if isinstance(sys.stdout, io.TextIOWrapper) and not sys.stdout.isatty():
        sys.stdout.reconfigure(line_buffering=True)  # to a log or a pipe, each line as it is printed
    args = parser().parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get("POLYALIGN_DEBUG", "") not in ("", "0")
    if args.command == "train" and args.recipe and "=" in args.recipe and not Path(args.recipe).exists():
        args.overrides.insert(0, args.recipe)  # `train --resume RUN key=value`: no recipe, only overrides
        args.recipe = None
    try:
        with warnings.catch_warnings():  # restored on return, for callers of main() in the same process
            warnings.showwarning = notices_as_lines(warnings.showwarning)
            return args.func(args)
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - every error ends as one message (a bug's says so)
        if debug:
            err.print(escape(traceback.format_exc()), end="", soft_wrap=True)
        error, code = _as_error(exc)
        err.print(f"[bold red]error:[/bold red] {escape(str(error))}", soft_wrap=True)
        return code


if __name__ == "__main__":
    sys.exit(main())
