"""Start-up time of the ``polyalign`` command: the wall time of commands that train nothing, and
what their imports cost (``python -X importtime``).

Each command runs in a fresh process ``--repeats`` times; with several ``--root`` source trees
(e.g. this one and an older checkout) the runs are interleaved, so a busy machine slows every arm
alike. The table gives the median wall time, whether the command imported torch and, from one
``-X importtime`` run, the import time of the heaviest top-level packages.

Beside the commands that read only configuration (``--help``, ``recipes``, ``plugins``, ``validate``)
it times two that must load a model, ``embed`` and ``search``, on a tiny model it trains and exports
first (xor-symile, 1 epoch; or ``--model DIR``), against their floor: ``python -c "import torch"``
plus the model's own load (``polyalign.load`` once everything it needs is imported). The target
(issue 30): configuration commands under 1 s without torch; model commands within 1.5x of the floor.

    python benchmarks/startup.py                         # writes benchmarks/results/startup.json
    python benchmarks/startup.py --root . --root ../main  # this tree against another checkout
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "startup.json"
CONFIG_COMMANDS = [["--help"], ["recipes"], ["plugins"], ["validate", "xor-symile"]]
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")
IMPORT_TORCH = ["-c", "import torch"]
LOAD_TIME = ("import sys, time, polyalign; from polyalign.core.plugin_manager import default_plugins; "
             "default_plugins(); polyalign.load(sys.argv[1], device='cpu'); start = time.perf_counter(); "
             "polyalign.load(sys.argv[1], device='cpu'); print(time.perf_counter() - start)")


def run(root: Path, argv: list[str], importtime: bool = False) -> tuple[float, str, str]:
    """Wall seconds of ``python ARGV`` with ``root`` first on the path, its stdout and stderr."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    flags = ["-X", "importtime"] if importtime else []
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *flags, *argv], cwd=root, env=env, capture_output=True, text=True,
                          check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"python {' '.join(argv)} failed in {root}:\n{proc.stderr[-2000:]}")
    return wall, proc.stdout, proc.stderr


def heaviest_imports(stderr: str, top: int = 5) -> list[tuple[str, float]]:
    """(top-level package, cumulative seconds) of the costliest packages imported, from -X importtime."""
    cost: dict[str, float] = {}
    for self_us, cumulative_us, indent, name in IMPORT_LINE.findall(stderr):
        package = name.split(".")[0]
        if len(indent) <= 1 or "." not in name:  # a package's first import holds its whole cost
            cost[package] = max(cost.get(package, 0.0), int(cumulative_us) / 1e6)
    return sorted(cost.items(), key=lambda kv: -kv[1])[:top]


def imported(stderr: str) -> set[str]:
    """Every module name an ``-X importtime`` run lists."""
    return {name for *_, name in IMPORT_LINE.findall(stderr)}


def tiny_model(root: Path, folder: Path) -> Path:
    """A 1-epoch xor-symile model exported to ``folder/model``, and ``folder/b.npy`` of 200 candidates."""
    run(root, ["-m", "polyalign", "train", "xor-symile", "data.n_train=512", "data.n_val=128", "data.n_test=128",
               "train.epochs=1", "train.threads=1", "--out", str(folder / "runs")])
    run_dir = next((folder / "runs").iterdir())
    run(root, ["-m", "polyalign", "export", str(run_dir), str(folder / "model")])
    run(root, ["-c", "import numpy as np, sys; np.save(sys.argv[1], "
               "np.random.default_rng(0).integers(0, 2, (200, 5)).astype('float32'))", str(folder / "b.npy")])
    return folder / "model"


def model_commands(model: Path, folder: Path) -> list[list[str]]:
    """``embed`` and ``search`` of the tiny model, on the CPU."""
    candidates = folder / "b.npy"
    return [["embed", str(model), "--modality", "b", "--input", str(candidates), "--out", str(folder / "b.safetensors"),
             "--device", "cpu"],
            ["search", str(model), "--query", "a=[1,0,1,0,1]", "--query", "c=[0,0,1,1,1]", "--candidates",
             f"b={candidates}", "--top", "3", "--device", "cpu"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", action="append", type=Path, help="source tree(s) to time (default: this one)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", type=Path, help="an exported xor-symile model (default: train a tiny one)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    roots = [r.resolve() for r in args.root or [Path(__file__).resolve().parents[1]]]
    folder = Path(tempfile.mkdtemp(prefix="polyalign-startup-"))
    model = args.model or tiny_model(roots[0], folder)
    if args.model:
        run(roots[0], ["-c", "import numpy as np, sys; np.save(sys.argv[1], "
                       "np.random.default_rng(0).integers(0, 2, (200, 5)).astype('float32'))", str(folder / "b.npy")])
    commands = [IMPORT_TORCH] + [["-m", "polyalign", *c] for c in CONFIG_COMMANDS + model_commands(model, folder)]
    walls: dict[tuple[str, tuple[str, ...]], list[float]] = {}
    loads: dict[str, list[float]] = {}
    for _ in range(args.repeats):  # interleaved: every arm sees the same load
        for argv in commands:
            for root in roots:
                walls.setdefault((str(root), tuple(argv)), []).append(run(root, argv)[0])
        for root in roots:
            loads.setdefault(str(root), []).append(float(run(root, ["-c", LOAD_TIME, str(model)])[1]))
    results = []
    for (root, argv), times in walls.items():
        stderr = run(Path(root), list(argv), importtime=True)[2]
        command = " ".join(argv)
        median = statistics.median(times)
        row = {"root": root, "command": "python " + command if command.startswith("-c") else
               "polyalign " + command.removeprefix("-m polyalign "), "median_s": median, "walls_s": times,
               "imports_torch": "torch" in imported(stderr), "heaviest_imports_s": heaviest_imports(stderr)}
        if argv[2:3] in (("embed",), ("search",)):
            floor = statistics.median(walls[(root, tuple(IMPORT_TORCH))]) + statistics.median(loads[root])
            row |= {"floor_s": floor, "times_floor": median / floor}
        results.append(row)
        shown = row["command"].replace(str(folder), "TMP")
        against = f"  {row['times_floor']:.2f}x the floor {row['floor_s']:.2f} s" if "floor_s" in row else ""
        print(f"{root}  {shown[:60]:60s} median {median:.2f} s (min {min(times):.2f}, max {max(times):.2f}); "
              f"torch {'yes' if row['imports_torch'] else 'no '}{against}; imports: "
              + ", ".join(f"{p} {s:.2f}" for p, s in row["heaviest_imports_s"]))
    for root, times in loads.items():
        print(f"{root}  polyalign.load of the model itself: median {statistics.median(times) * 1000:.1f} ms")
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} CPUs")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "load_average": load,
                                    "repeats": args.repeats, "model_load_s": loads, "results": results},
                                   indent=2) + "\n")


if __name__ == "__main__":
    main()
