"""Every built-in objective on three kinds of multi-modal information, over several seeds.

    python benchmarks/objectives.py                       # 3 seeds, every objective, 3 sets, 2 jobs
    python benchmarks/objectives.py --seeds 1 --objectives clip "symile (per_modality)" --sets digits
    python benchmarks/objectives.py --costs               # the per-step cost table instead

The three sets, each trained with ``polyalign.train`` from a shipped recipe with only the loss
replaced (and the overrides below), then scored with the loss's own rule:

- ``xor`` (joint information only): the Symile paper's XOR (recipes/xor-symile.yaml, d_v = 5,
  p̂ = 1): predict b from (a, c) among the 32 distinct b vectors. Pairwise objectives stay at
  chance (0.031).
- ``digits`` (redundant information, M = 6): recipes/digit-views.yaml, six feature families of
  scikit-learn's bundled 8 x 8 digits (pixels, zones, profiles, gradients, DCT, moments: see
  polyalign/plugins/datasets/digit_views.py for where each comes from); retrieve each view of a
  test image from its five other views among the 300 test images (chance 0.003), mean over the six.
- ``mixed`` (M3-like: both kinds): XOR with d_v = 3 joint bits plus d_shared = 3 bits that a, b
  and c share; predict b from (a, c) among the 64 distinct b vectors. Pairwise information finds
  the shared bits (0.125 at best), joint information the rest.

Prints one Markdown table (mean and 95% interval over seeds, Student's t) and writes
``benchmarks/results/objectives.json``. Runs go ``--jobs`` at a time, one torch thread each.
A configuration whose loss step the cost estimate puts above ``--max-step-seconds`` is skipped
and its cell says so (symile n_squared at M = 6).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "objectives.json"
COSTS = ROOT / "benchmarks" / "results" / "objective_costs.json"

SETS = {  # name -> (recipe, overrides, what the cell measures)
    "xor": ("recipes/xor-symile.yaml", ["data.n_train=4000", "train.batch_size=64"],
            "b from (a, c), 32 candidates"),
    "digits": ("recipes/digit-views.yaml", [], "each view from the other 5, 300 candidates, mean of 6"),
    "mixed": ("recipes/xor-symile.yaml", ["data.n_train=4000", "train.batch_size=64", "data.d_v=3",
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

T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
"""Student's t quantile 0.975 by degrees of freedom (seeds - 1)."""


def accuracy(run_dir: Path) -> float:
    """Mean top-1 accuracy over the run's zero_shot evaluations."""
    rows = json.loads((run_dir / "eval" / "report.json").read_text())
    values = [r["value"] for r in rows if r["task"] == "zero_shot" and r["metric"] == "accuracy"]
    return sum(values) / len(values)


def one_run(job: dict) -> dict:
    """Train and evaluate one (objective, set, seed), or skip it when one step would take too long."""
    import contextlib
    import io

    import torch

    import polyalign
    from polyalign.core.assemble import build_loss
    from polyalign.core.plugin_manager import default_plugins
    from polyalign.core.step_cost import recipe_step_cost

    torch.set_num_threads(1)
    recipe_path, overrides = ROOT / SETS[job["set"]][0], job["overrides"]
    recipe = polyalign.load_recipe(recipe_path, overrides)
    found = recipe_step_cost(recipe, build_loss(recipe, default_plugins()), "cpu")
    out = {k: job[k] for k in ("objective", "set", "seed", "overrides")}
    if found is not None and found[0].seconds > job["max_step_seconds"]:
        return {**out, "skipped": found[1]}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="objectives-") as tmp, contextlib.redirect_stderr(io.StringIO()):
        run_dir = polyalign.train(recipe_path, out=tmp, overrides=overrides)
        acc = accuracy(run_dir)
    return {**out, "accuracy": acc, "seconds": round(time.perf_counter() - start, 1)}


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% confidence interval (Student's t; 0 for one value)."""
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, T_975.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))


def markdown(runs: list[dict], objectives: list[str], sets: list[str], seeds: int) -> str:
    """One row per objective, one column per set: mean ± 95% half-width of the accuracy."""
    lines = [f"Top-1 accuracy, mean ± 95% interval over {seeds} seed(s) (Student's t), each objective "
             f"scored with its own rule. " + "; ".join(f"{s}: {SETS[s][2]}" for s in sets) + ".", "",
             "| objective | " + " | ".join(sets) + " |", "|---|" + "---|" * len(sets)]
    for name in objectives:
        cells = []
        for s in sets:
            mine = [r for r in runs if r["objective"] == name and r["set"] == s]
            accs = [r["accuracy"] for r in mine if "accuracy" in r]
            if accs:
                mean, half = interval(accs)
                cells.append(f"{mean:.3f} ± {half:.3f}")
            else:
                cells.append("skipped: step too slow" if mine else "—")
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
    parser.add_argument("--seeds", type=int, default=3, help="seeds per cell (0..seeds-1)")
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=list(OBJECTIVES),
                        metavar="OBJECTIVE")
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides applied to every run, e.g. train.epochs=10")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (one torch thread each)")
    parser.add_argument("--max-step-seconds", type=float, default=2.0,
                        help="skip a configuration whose estimated loss step takes longer")
    parser.add_argument("--keep", action="store_true",
                        help="keep the results file's runs of the objectives not named, and rerun only these")
    parser.add_argument("--costs", action="store_true", help="print the per-step cost table instead")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
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
    jobs = [{"objective": name, "set": s, "seed": seed, "max_step_seconds": args.max_step_seconds,
             "overrides": [*SETS[s][1], f"loss={OBJECTIVES[name]}", f"seed={seed}", "logging=[]", *args.set]}
            for seed in range(args.seeds) for s in args.sets for name in args.objectives]
    runs, start, commands, rows = [], time.perf_counter(), [], list(args.objectives)
    out = args.out or RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.keep and out.exists():  # the earlier sweep's other rows, in the table's order
        earlier = json.loads(out.read_text())
        runs = [r for r in earlier["runs"] if r["objective"] not in args.objectives]
        commands = earlier.get("commands", [earlier.get("command")])
        rows = [o for o in OBJECTIVES if o in args.objectives or any(r["objective"] == o for r in runs)]
    commands.append("python " + shlex.join([f"benchmarks/{Path(__file__).name}",
                                             *(sys.argv[1:] if argv is None else argv)]))
    kept = len(runs)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for run in pool.map(one_run, jobs):
            runs.append(run)
            shown = f"accuracy={run['accuracy']:.3f} ({run['seconds']:.0f} s)" if "accuracy" in run else "skipped"
            print(f"[{len(runs) - kept}/{len(jobs)}] {run['objective']:34s} {run['set']:7s} seed={run['seed']} "
                  f"{shown}", file=sys.stderr, flush=True)
            table = markdown(runs, rows, args.sets, args.seeds)
            out.write_text(json.dumps({"commands": commands, "seeds": args.seeds, "jobs": args.jobs,
                                       "cpu_count": os.cpu_count(), "finished": len(runs) - kept == len(jobs),
                                       "minutes": round((time.perf_counter() - start) / 60, 1),
                                       "load_average": os.getloadavg(), "runs": runs, "table": table},
                                      indent=2) + "\n")  # after every run: a long sweep stopped early keeps its rows
    print(table)
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
