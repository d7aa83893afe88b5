"""One headline number per configuration of a sweep, and its paired difference to a reference.

    python benchmarks/headline.py sweeps/digit-views --ref 'loss={plugin: clip}'
    python benchmarks/headline.py SWEEP_DIR [SWEEP_DIR ...] --ref clip --markdown

The headline of a run is its mean top-1 accuracy over its ``zero_shot`` evaluations (each
modality from the others, say), read per test tuple from ``eval/ranks.json``. For each
configuration (``runs/<configuration>/seed-S/<run>``): the mean over seeds with a 95% Student-t
interval, every seed's value, and the paired difference to the configuration whose name contains
``--ref`` (exactly, else as a substring): the mean over seeds of (config - ref) on the same seed,
with a 95% paired-bootstrap interval that resamples seeds and, within each, test tuples
(10,000 resamples; as ``polyalign compare --paired``), and the Student-t interval over seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import numpy as np

T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def per_tuple(run: Path) -> np.ndarray:
    """``(tuples,)`` mean over the run's zero_shot rows of top-1 correctness (rank 1)."""
    rows = [r for r in json.loads((run / "eval" / "ranks.json").read_text()) if r["task"] == "zero_shot"]
    if not rows:
        raise SystemExit(f"{run}: no zero_shot rows in eval/ranks.json")
    hits = []
    for r in rows:
        order = np.argsort(r["tuples"])
        hits.append((np.asarray(r["ranks"])[order] == 1).astype(float))
    return np.mean(hits, axis=0)


def configurations(sweeps: list[Path]) -> dict[str, dict[int, np.ndarray]]:
    """``{configuration: {seed: per-tuple headline}}`` over every finished run of the sweeps."""
    found: dict[str, dict[int, np.ndarray]] = {}
    for sweep in sweeps:
        for config in sorted((sweep / "runs").iterdir()):
            for seed_dir in sorted(config.glob("seed-*")):
                runs = sorted(p for p in seed_dir.iterdir() if (p / "eval" / "ranks.json").exists())
                if runs:
                    found.setdefault(config.name, {})[int(seed_dir.name[5:])] = per_tuple(runs[-1])
    return found


def t_interval(values: list[float]) -> tuple[float, float]:
    mean = statistics.mean(values)
    if len(values) < 2:
        return mean, 0.0
    half = T_975.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, half


def paired_bootstrap(a: dict[int, np.ndarray], b: dict[int, np.ndarray], draws: int = 10000,
                     seed: int = 0) -> tuple[float, float, float]:
    """Mean over shared seeds of mean(a - b), and its 95% bootstrap interval (seeds, then tuples)."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    rng = np.random.default_rng(seed)
    stats = np.empty(draws)
    for i in range(draws):
        picked = rng.integers(len(seeds), size=len(seeds))
        stats[i] = np.mean([diffs[k][rng.integers(len(diffs[k]), size=len(diffs[k]))].mean() for k in picked])
    return float(np.mean([d.mean() for d in diffs])), float(np.quantile(stats, 0.025)), float(np.quantile(stats, 0.975))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", type=Path)
    parser.add_argument("--ref", default="clip", help="the reference configuration (its name, or a part of it)")
    parser.add_argument("--label", default="", help="a name for the set, first column of the Markdown rows")
    parser.add_argument("--markdown", action="store_true", help="Markdown table rows instead of plain text")
    args = parser.parse_args()
    configs = configurations(args.sweeps)
    ref = args.ref if args.ref in configs else next((c for c in configs if args.ref in c), None)
    for name, seeds in configs.items():
        values = [float(seeds[s].mean()) for s in sorted(seeds)]
        mean, half = t_interval(values)
        cell = f"{mean:.3f} ± {half:.3f}"
        every = " ".join(f"{v:.3f}" for v in values)
        diff = ""
        if ref is not None and name != ref:
            d, lo, hi = paired_bootstrap(seeds, configs[ref])
            shared = sorted(set(seeds) & set(configs[ref]))
            dm, dh = t_interval([float((seeds[s] - configs[ref][s]).mean()) for s in shared])
            diff = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}] (t: ±{dh:.3f})"
        if args.markdown:
            print(f"| {args.label} | {name} | {cell} | {every} | {diff or '—'} |")
        else:
            print(f"{name:70s} {cell}  seeds: {every}  vs ref: {diff or '(ref)'}")


if __name__ == "__main__":
    main()
