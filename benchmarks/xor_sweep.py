"""Every loss on the Symile paper's binary XOR task, for p_hat in {0, 0.5, 1}, over several seeds.

    python benchmarks/xor_sweep.py                   # 2 seeds, every loss, p_hat 0 / 0.5 / 1
    python benchmarks/xor_sweep.py --seeds 5 --losses symile clip

Each run is ``polyalign.train`` of ``recipes/xor-symile.yaml`` with the loss replaced by one of
the variants below and the same training settings for all (the recipe's, unless overridden with
``--set``), then its ``zero_shot`` evaluation: predict b from (a, c) among the 32 distinct b
vectors of the test split, top-1 accuracy (chance = 1/32). Prints a Markdown table of
mean ± std over seeds and writes ``benchmarks/results/xor_sweep.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "xor-symile.yaml"
RESULTS = ROOT / "benchmarks" / "results" / "xor_sweep.json"
P_HATS = (0.0, 0.5, 1.0)

LOSSES = {  # row name -> the recipe's `loss:` node, as YAML
    "symile (n_squared)": "{plugin: symile, negatives: n_squared}",
    "symile (n)": "{plugin: symile, negatives: n}",
    "clip": "{plugin: clip}",
    "gram": "{plugin: gram, anchor: a}",
    "mv_infonce": "{plugin: mv_infonce}",
    "mv_dhel": "{plugin: mv_dhel}",
    "siglip": "{plugin: siglip}",
    "dcl": "{plugin: dcl}",
    "dclw": "{plugin: dclw}",
    "clip + 0.1 align_uniform": "[{plugin: clip}, {plugin: align_uniform, weight: 0.1}]",
}


def accuracy(run_dir: Path) -> float:
    """Top-1 accuracy of the run's zero_shot evaluation (b from a and c)."""
    rows = json.loads((run_dir / "eval" / "report.json").read_text())
    return next(r["value"] for r in rows if r["task"] == "zero_shot" and r["metric"] == "accuracy")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=2, help="seeds per cell (0..seeds-1)")
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES), metavar="LOSS")
    parser.add_argument("--p-hat", type=float, nargs="+", default=list(P_HATS))
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides applied to every run, e.g. train.epochs=10")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    import torch

    import polyalign

    torch.set_num_threads(args.threads)
    runs = []
    with tempfile.TemporaryDirectory(prefix="xor-sweep-") as tmp:
        for name in args.losses:
            for p_hat in args.p_hat:
                for seed in range(args.seeds):
                    overrides = [f"loss={LOSSES[name]}", f"data.p_hat={p_hat}", f"seed={seed}",
                                 "name=xor-sweep", *args.set]
                    t0 = time.perf_counter()
                    run_dir = polyalign.train(RECIPE, out=tmp, overrides=overrides)
                    acc = accuracy(run_dir)
                    runs.append({"loss": name, "p_hat": p_hat, "seed": seed, "accuracy": acc,
                                 "seconds": round(time.perf_counter() - t0, 1), "overrides": overrides})
                    print(f"{name:26s} p_hat={p_hat:<4} seed={seed} accuracy={acc:.3f} "
                          f"({runs[-1]['seconds']:.0f} s)", file=sys.stderr, flush=True)
    recipe = polyalign.load_recipe(RECIPE, args.set)
    table = markdown(runs, args.losses, args.p_hat, args.seeds, recipe.train, recipe.model.embed_dim)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"recipe": str(RECIPE.relative_to(ROOT)), "overrides": args.set,
                                    "seeds": args.seeds, "threads": args.threads,
                                    "cpu_count": os.cpu_count(), "runs": runs, "table": table}, indent=2) + "\n")
    print(f"\nwrote {args.out}", file=sys.stderr)


def markdown(runs: list[dict], losses: list[str], p_hats: list[float], seeds: int, train, embed_dim: int) -> str:
    """The table: one row per loss, one column per p_hat, mean ± std of the accuracy."""
    lines = [f"Zero-shot accuracy predicting b from (a, c) among 32 candidates (chance 0.031), "
             f"mean ± std over {seeds} seed(s); d_v = 5, one linear layer per modality, embed_dim "
             f"{embed_dim}, L2; {train.epochs} epochs, batch {train.batch_size}, lr {train.lr}.",
             "", "| loss | " + " | ".join(f"p̂ = {p:g}" for p in p_hats) + " |",
             "|---|" + "---|" * len(p_hats)]
    for name in losses:
        cells = []
        for p in p_hats:
            accs = [r["accuracy"] for r in runs if r["loss"] == name and r["p_hat"] == p]
            std = statistics.stdev(accs) if len(accs) > 1 else 0.0
            cells.append(f"{statistics.mean(accs):.3f} ± {std:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
