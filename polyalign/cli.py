"""The ``polyalign`` command line: train, eval, validate, plugins, recipes."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from polyalign.core.errors import PolyalignError

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def _rows_table(rows: list[dict], title: str) -> Table:
    from polyalign.core.evaluate import format_value

    table = Table(title=title)
    cols = ["task", "target", "query", "metric", "value"]
    cols += sorted({k for r in rows for k in r} - set(cols))
    for c in cols:
        table.add_column(c, justify="right" if c in ("value", "n", "candidates", "ci_low", "ci_high") else "left")
    for r in rows:
        table.add_row(*["+".join(r[c]) if c == "query" else format_value(r.get(c, "")) for c in cols])
    return table


def cmd_train(args: argparse.Namespace) -> int:
    import polyalign
    from polyalign.core.shipped import resolve_recipe_path

    if args.recipe is None and args.resume is None:
        raise PolyalignError("train needs a RECIPE (a path or a name from `polyalign recipes`) or --resume RUN_DIR")
    recipe = None if args.recipe is None else polyalign.load_recipe(resolve_recipe_path(args.recipe), args.overrides)
    run_dir = polyalign.train(recipe, out=args.out, resume=args.resume,
                              overrides=args.overrides if args.resume else None)
    if int(os.environ.get("RANK", "0")) == 0:
        _print_report(run_dir)
        out.print(f"run directory: [bold]{run_dir}[/bold]")
    return 0


def _print_report(run_dir: Path) -> None:
    report = Path(run_dir) / "eval" / "report.json"
    if report.is_file():
        rows = json.loads(report.read_text())
        if rows:
            out.print(_rows_table(rows, f"evaluation ({run_dir.name})"))


def cmd_eval(args: argparse.Namespace) -> int:
    import polyalign

    polyalign.evaluate(args.run_dir, checkpoint=args.checkpoint)
    _print_report(Path(args.run_dir))
    out.print(f"report: {Path(args.run_dir) / 'eval' / 'report.md'}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    import polyalign
    from polyalign.core.shipped import resolve_recipe_path

    recipe = polyalign.load_recipe(resolve_recipe_path(args.recipe), args.overrides)
    if args.print:
        print(recipe.to_yaml())
    out.print(f"{args.recipe}: valid ({len(recipe.modalities)} modalities, "
              f"loss {'+'.join(n.plugin for n in recipe.losses)}, data {recipe.data.plugin})")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from polyalign.core.plugins import default_plugins, describe

    listing = describe(default_plugins())
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    table = Table(title="plugins")
    for c in ("name", "distribution", "version", "status"):
        table.add_column(c)
    for p in listing["plugins"]:
        table.add_row(p["name"], p["distribution"], p["version"],
                      "[red]" + p["error"] + "[/red]" if p["error"] else ("built-in" if p["builtin"] else "loaded"))
    out.print(table)
    for kind in ("encoders", "losses", "datasets", "evaluators", "loggers"):
        t = Table(title=kind)
        t.add_column("name", style="bold")
        t.add_column("plugin")
        t.add_column("help")
        for c in listing[kind]:
            t.add_row(c["name"], c["plugin"], c["help"])
        out.print(t)
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from polyalign.core.shipped import recipe_summary, shipped_recipes

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
        shutil.copyfile(recipes[args.name], dest)
        out.print(f"copied {args.name} to {dest}")
        return 0
    table = Table(title="shipped recipes")
    table.add_column("name", style="bold")
    table.add_column("description")
    table.add_column("command")
    for name, path in recipes.items():
        command, description = recipe_summary(path)
        table.add_row(name, description, command)
    out.print(table)
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser of ``polyalign``."""
    p = argparse.ArgumentParser(prog="polyalign", description="Contrastive learning over any number of modalities.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a recipe, then evaluate it")
    t.add_argument("recipe", nargs="?", help="recipe file or shipped recipe name")
    t.add_argument("overrides", nargs="*", help="key.path=value overrides")
    t.add_argument("--out", help="folder for run directories (default: runs/)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a run directory with its recipe's evaluators")
    e.add_argument("run_dir")
    e.add_argument("--checkpoint", default="last", choices=["last", "best"])
    e.set_defaults(func=cmd_eval)

    v = sub.add_parser("validate", help="check a recipe and report every problem at once")
    v.add_argument("recipe")
    v.add_argument("overrides", nargs="*")
    v.add_argument("--print", action="store_true", help="print the resolved recipe")
    v.set_defaults(func=cmd_validate)

    pl = sub.add_parser("plugins", help="list loaded plugins and registered components")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plugins)

    r = sub.add_parser("recipes", help="list shipped recipes, or copy one: recipes cp NAME [DEST]")
    r.add_argument("action", nargs="?", choices=["ls", "cp"], default="ls")
    r.add_argument("name", nargs="?")
    r.add_argument("dest", nargs="?")
    r.set_defaults(func=cmd_recipes)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; user errors print one message and exit 2."""
    args = parser().parse_args(argv)
    if getattr(args, "overrides", None) and args.command == "train" and args.recipe and "=" in args.recipe:
        args.overrides.insert(0, args.recipe)
        args.recipe = None
    try:
        return args.func(args)
    except PolyalignError as exc:
        err.print(f"[bold red]error:[/bold red] {escape(str(exc))}", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
