"""Every built-in objective on three kinds of multi-modal information, over several seeds, as one
``polyalign sweep`` per set (the loss the grid) read back with ``polyalign compare``'s headline.

    python benchmarks/objectives.py                       # 3 seeds, every objective, 3 sets, 2 jobs
    python benchmarks/objectives.py --seeds 1 --objectives clip "symile (per_modality)" --sets digits
    python benchmarks/objectives.py --costs               # the per-step cost table instead

The three sets, each a shipped recipe with only the loss replaced (and the overrides below), every
objective scored with the loss's own rule:

- ``xor`` (joint information only): the Symile paper's XOR (polyalign/recipes/xor-symile.yaml, d_v = 5,
  p̂ = 1): predict b from (a, c) among the 32 distinct b vectors. Pairwise objectives stay at
  chance (0.031).
- ``digits`` (redundant information, M = 6): polyalign/recipes/digit-views.yaml, six feature families of
  scikit-learn's bundled 8 x 8 digits (pixels, zones, profiles, gradients, DCT, moments: see
  polyalign/plugins/datasets/digit_views.py for where each comes from); retrieve each view of a
  test image from its five other views among the 300 test images (chance 0.003), mean over the six.
- ``mixed`` (M3-like: both kinds): XOR with d_v = 3 joint bits plus d_shared = 3 bits that a, b
  and c share; predict b from (a, c) among the 64 distinct b vectors. Pairwise information finds
  the shared bits (0.125 at best), joint information the rest.

Each set is the sweep directory ``--sweeps/<set>`` (its command printed before it runs): the same
command again keeps the finished runs, and more objectives or seeds add runs to it. A cell is the
configuration's headline (``polyalign compare SWEEP``: the mean of the one-from-rest accuracy rows,
95% percentile bootstrap over seeds and test tuples); the table holds every objective the sweeps
hold. Prints it as Markdown and writes ``benchmarks/results/objectives.json``. A configuration whose
loss step the cost estimate puts above ``--max-step-seconds`` is left out of the grid and its cell
says so (symile n_squared at M = 6). Two configurations are tested against each other with
``polyalign compare SWEEP --paired 'loss=clip' 'loss=[clip, symile]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "objectives.json"
COSTS = ROOT / "benchmarks" / "results" / "objective_costs.json"

SETS = {  # name -> (recipe, overrides, what the cell measures)
    "xor": ("polyalign/recipes/xor-symile.yaml", ["data.n_train=4000", "train.batch_size=64"],
            "b from (a, c), 32 candidates"),
    "digits": ("polyalign/recipes/digit-views.yaml", [], "each view from the other 5, 300 candidates, mean of 6"),
    "mixed": ("polyalign/recipes/xor-symile.yaml", ["data.n_train=4000", "train.batch_size=64", "data.d_v=3",
                                          "data.d_shared=3"], "b from (a, c), 64 candidates"),
}

OBJECTIVES = {  # row name -> the recipe's `loss:` node, as YAML
    "clip": "{plugin: clip}",
    "siglip": "{plugin: siglip}",
    "dcl": "{plugin: dcl}",
    "dclw": "{plugin: dclw}",
    "align_uniform": "{plugin: align_uniform}",
    "mv_infonce": "{plugin: mv_infonce}",
    "mv_dhel": "{plugin: mv_dhel}",
    "gram": "{plugin: gram}",
    "gram (per_modality)": "{plugin: gram, negatives: per_modality}",
    "symile (auto, default)": "{plugin: symile}",
    "symile (n_squared)": "{plugin: symile, negatives: n_squared}",
    "symile (n)": "{plugin: symile, negatives: n}",
    "symile (per_modality)": "{plugin: symile, negatives: per_modality}",
    "clip + symile (scored together)": "[{plugin: clip}, {plugin: symile}]",
    "clip + symile (score_with clip)": "[{plugin: clip, score_with: true}, {plugin: symile}]",
    "clip + symile (per_modality)": "[{plugin: clip}, {plugin: symile, negatives: per_modality}]",
}

SWEEPS = Path("sweeps") / "objectives"


def label(name: str) -> str:
    """The configuration's label in the sweep (its grid override)."""
    return f"loss={OBJECTIVES[name]}"


def too_slow(set_name: str, name: str, overrides: list[str], max_seconds: float) -> str | None:
    """Why the objective is left out of the set's grid (its estimated loss step above ``max_seconds``), or None."""
    import polyalign
    from polyalign.core.assemble import build_loss
    from polyalign.core.plugin_manager import default_plugins
    from polyalign.core.step_cost import recipe_step_cost

    recipe = polyalign.load_recipe(ROOT / SETS[set_name][0], [*overrides, f"loss={OBJECTIVES[name]}"])
    found = recipe_step_cost(recipe, build_loss(recipe, default_plugins()), "cpu")
    return found[1] if found is not None and found[0].seconds > max_seconds else None


def sweep_command(set_name: str, names: list[str], seeds: int, jobs: int, sweep_dir: Path,
                  overrides: list[str]) -> list[str]:
    """The ``polyalign sweep`` command of one set (run in the repository): its recipe, the objectives as the grid of
    ``loss``."""
    grid = "loss=" + ",".join(OBJECTIVES[n] for n in names)
    return ["polyalign", "sweep", SETS[set_name][0], "--grid", grid,
            "--seeds", str(seeds), "--jobs", str(jobs), "--threads", "1", "--out", str(sweep_dir), *overrides]


def headlines(sweep_dir: Path) -> dict[str, dict]:
    """Objective name -> the headline of its configuration in the sweep (as ``polyalign compare`` computes it)."""
    from polyalign.evaluation.compare import load_run
    from polyalign.evaluation.headline import config_headline, default_patterns
    from polyalign.sweep.plan import sweep_groups

    names = {label(n): n for n in OBJECTIVES}
    groups = {k: [load_run(r) for r in runs] for k, runs in sweep_groups(sweep_dir).items() if runs and k in names}
    patterns = default_patterns([run for runs in groups.values() for run in runs])
    return {names[k]: vars(config_headline(k, runs, patterns)) for k, runs in groups.items()}


def markdown(found: dict[str, dict[str, dict]], skipped: dict[str, dict[str, str]], sets: list[str]) -> str:
    """One row per objective, one column per set: the headline and its 95% bootstrap interval."""
    lines = ["Top-1 accuracy (one-from-rest, mean over the targets), mean over seeds [95% percentile bootstrap over "
             "seeds and test tuples], each objective scored with its own rule. "
             + "; ".join(f"{s}: {SETS[s][2]}" for s in sets) + ".", "",
             "| objective | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for name in OBJECTIVES:
        if not any(name in found[s] or name in skipped[s] for s in sets):
            continue
        cells = []
        for s in sets:
            h = found[s].get(name)
            if h is None:
                cells.append("skipped: step too slow" if name in skipped[s] else "—")
            else:
                ci = f" [{h['ci_low']:.3f}, {h['ci_high']:.3f}]" if h["ci_low"] is not None else ""
                cells.append(f"{h['value']:.3f}{ci} ({h['runs']} seeds)")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(objectives: list[str], shapes: list[tuple[int, int]], d: int = 64) -> tuple[str, list[dict]]:
    """Estimated and measured milliseconds of one loss step (forward + backward) per (M, N)."""
    import torch
    import torch.nn.functional as F
    import yaml

    import polyalign
    from polyalign.core.step_cost import estimate_step, measured_rate

    torch.set_num_threads(1)
    rate = measured_rate(d, "cpu")
    rows = []
    for name in objectives:
        node = yaml.safe_load(OBJECTIVES[name])
        for m, n in shapes:
            names = [f"m{k}" for k in range(m)]
            losses = []
            for item in node if isinstance(node, list) else [node]:
                options = {k: v for k, v in item.items() if k not in ("plugin", "weight", "score_with")}
                losses.append(polyalign.build("loss", item["plugin"], **options, modalities=names, embed_dim=d,
                                              batch_size=n))
            cost = [estimate_step(loss, n, d, m, rate) for loss in losses]
            flops = sum(c.flops for c in cost)
            row = {"objective": name, "M": m, "N": n, "estimate_ms": flops / rate * 1e3,
                   "ratio_to_clip": sum(c.ratio for c in cost)}
            if flops / rate < 5.0:  # measure what takes at most seconds; the rest is the estimate alone
                emb = {k: F.normalize(torch.randn(n, d), dim=1).requires_grad_() for k in names}
                times = []
                for _ in range(4):
                    start = time.perf_counter()
                    sum(loss(emb).loss for loss in losses).backward()
                    times.append(time.perf_counter() - start)
                row["measured_ms"] = min(times[1:]) * 1e3
            rows.append(row)
            print(f"{name} M={m} N={n}: {row}", file=sys.stderr, flush=True)
    return cost_markdown(rows, objectives, shapes, rate, d), rows


def number(x: float) -> str:
    """Three significant digits, without an exponent below ten million."""
    return f"{x:.3g}" if x < 1000 else f"{x:,.0f}" if x < 1e7 else f"{x:.2g}"


def cost_markdown(rows: list[dict], objectives: list[str], shapes: list[tuple[int, int]], rate: float,
                  d: int) -> str:
    """One row per objective, one column per (M, N): measured (estimated) ms and the multiple of CLIP."""
    lines = [f"Milliseconds of one loss step (forward + backward, d = {d}, one CPU thread): measured "
             f"(estimated), and the estimate as a multiple of a CLIP step on the same batch; this "
             f"machine's measured rate {rate / 1e9:.3g} GFLOP/s.", "",
             "| objective | " + " | ".join(f"M={m}, N={n}" for m, n in shapes) + " |",
             "|---|" + "---|" * len(shapes)]
    for name in objectives:
        cells = []
        for r in (r for r in rows if r["objective"] == name):
            measured = number(r["measured_ms"]) if "measured_ms" in r else "not run"
            cells.append(f"{measured} ({number(r['estimate_ms'])}), {number(r['ratio_to_clip'])}x")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per configuration (0, 1, ...)")
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=list(OBJECTIVES),
                        metavar="OBJECTIVE")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides applied to every run, e.g. train.epochs=10")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    parser.add_argument("--sweeps", type=Path, default=SWEEPS, help="folder of the sweep directories, one per set")
    parser.add_argument("--max-step-seconds", type=float, default=2.0,
                        help="skip a configuration whose estimated loss step takes longer")
    parser.add_argument("--costs", action="store_true", help="print the per-step cost table instead")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.sweeps = args.sweeps.resolve()  # the sweeps run in the repository
    if args.costs:
        shapes = [(3, 128), (3, 512), (6, 128), (6, 512)]
        table, rows = cost_table(args.objectives, shapes)
        print(table)
        out = args.out or COSTS
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"command": "python benchmarks/objectives.py --costs", "shapes": shapes,
                                   "rows": rows, "table": table, "load_average": os.getloadavg()}, indent=2) + "\n")
        print(f"\nwrote {out}", file=sys.stderr)
        return
    given = sys.argv[1:] if argv is None else argv
    commands = ["python " + shlex.join([f"benchmarks/{Path(__file__).name}", *given])]
    found: dict[str, dict[str, dict]] = {}
    skipped: dict[str, dict[str, str]] = {}
    start = time.perf_counter()
    for s in args.sets:
        overrides = [*SETS[s][1], "logging=[]", *args.set]
        skipped[s] = {n: why for n in args.objectives if (why := too_slow(s, n, overrides, args.max_step_seconds))}
        names = [n for n in args.objectives if n not in skipped[s]]
        sweep_dir = args.sweeps / s
        command = sweep_command(s, names, args.seeds, args.jobs, sweep_dir, overrides)
        commands.append(shlex.join(command))
        for n, why in skipped[s].items():
            print(f"{s}: {n} left out: {why}", file=sys.stderr, flush=True)
        if names:
            print(f"$ {shlex.join(command)}", file=sys.stderr, flush=True)
            if subprocess.run([sys.executable, "-m", *command], cwd=ROOT).returncode:
                print(f"{s}: some runs failed (their errors above); the table holds the finished ones, and the "
                      f"same command tries the others again", file=sys.stderr, flush=True)
        found[s] = headlines(sweep_dir) if (sweep_dir / "sweep.json").is_file() else {}
    table = markdown(found, skipped, args.sets)
    out = args.out or RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"commands": commands, "seeds": args.seeds, "jobs": args.jobs,
                               "cpu_count": os.cpu_count(), "minutes": round((time.perf_counter() - start) / 60, 1),
                               "load_average": os.getloadavg(), "sweeps": {s: str(args.sweeps / s) for s in args.sets},
                               "headlines": found, "skipped": skipped, "table": table}, indent=2) + "\n")
    print(table)
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
