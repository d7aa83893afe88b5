"""Start-up time of the ``polyalign`` command: the wall time of commands that train nothing, and
what their imports cost (``python -X importtime``).

Each command runs in a fresh process ``--repeats`` times; with several ``--root`` source trees
(e.g. this one and an older checkout) the runs are interleaved, so a busy machine slows every arm
alike. The table gives the median CPU time (user + system: what a busy machine barely changes) and wall
time, whether the command imported torch and, from one ``-X importtime`` run, the import time of the
heaviest top-level packages.

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
import resource
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
CANDIDATES = ("import sys, numpy as np; "  # 200 xor inputs of modality b (5 bits), the candidates of search
              "np.save(sys.argv[1], np.random.default_rng(0).integers(0, 2, (200, 5)).astype('float32'))")
LOAD_TIME = ("import sys, time, polyalign; from polyalign.core.plugin_manager import default_plugins; "
             "default_plugins(); polyalign.load(sys.argv[1], device='cpu'); "
             "start = time.perf_counter(), time.process_time(); polyalign.load(sys.argv[1], device='cpu'); "
             "print(time.perf_counter() - start[0], time.process_time() - start[1])")


def cpu_of_children() -> float:
    """CPU seconds (user + system) of the child processes that ended so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(root: Path, argv: list[str], importtime: bool = False) -> tuple[float, float, str, str]:
    """Wall and CPU seconds of ``python ARGV`` with ``root`` first on the path, its stdout and stderr.

    CPU seconds barely move with the machine's load, wall seconds do: on a shared machine compare CPU."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    flags = ["-X", "importtime"] if importtime else []
    start, cpu = time.perf_counter(), cpu_of_children()
    proc = subprocess.run([sys.executable, *flags, *argv], cwd=root, env=env, capture_output=True, text=True,
                          check=False)
    wall, cpu = time.perf_counter() - start, cpu_of_children() - cpu
    if proc.returncode != 0:
        raise SystemExit(f"python {' '.join(argv)} failed in {root}:\n{proc.stderr[-2000:]}")
    return wall, cpu, proc.stdout, proc.stderr


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
    """A 1-epoch xor-symile model exported to ``folder/model``."""
    run(root, ["-m", "polyalign", "train", "xor-symile", "data.n_train=512", "data.n_val=128", "data.n_test=128",
               "train.epochs=1", "train.threads=1", "--out", str(folder / "runs")])
    run_dir = next((folder / "runs").iterdir())
    run(root, ["-m", "polyalign", "export", str(run_dir), str(folder / "model")])
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
    run(roots[0], ["-c", CANDIDATES, str(folder / "b.npy")])
    commands = [IMPORT_TORCH] + [["-m", "polyalign", *c] for c in CONFIG_COMMANDS + model_commands(model, folder)]
    walls: dict[tuple[str, tuple[str, ...]], list[float]] = {}
    cpus: dict[tuple[str, tuple[str, ...]], list[float]] = {}
    loads: dict[str, list[tuple[float, float]]] = {}  # root -> (wall, CPU) of polyalign.load
    for _ in range(args.repeats):  # interleaved: every arm sees the same load
        for argv in commands:
            for root in roots:
                wall, cpu, _, _ = run(root, argv)
                walls.setdefault((str(root), tuple(argv)), []).append(wall)
                cpus.setdefault((str(root), tuple(argv)), []).append(cpu)
        for root in roots:
            wall, cpu = map(float, run(root, ["-c", LOAD_TIME, str(model)])[2].split())
            loads.setdefault(str(root), []).append((wall, cpu))
    results = []
    for (root, argv), times in walls.items():
        stderr = run(Path(root), list(argv), importtime=True)[3]
        command = " ".join(argv)
        median, cpu = statistics.median(times), statistics.median(cpus[(root, argv)])
        row = {"root": root, "command": "python " + command if command.startswith("-c") else
               "polyalign " + command.removeprefix("-m polyalign "), "median_s": median, "walls_s": times,
               "median_cpu_s": cpu, "cpus_s": cpus[(root, argv)], "imports_torch": "torch" in imported(stderr),
               "heaviest_imports_s": heaviest_imports(stderr)}
        if argv[2:3] in (("embed",), ("search",)):
            torch_key = (root, tuple(IMPORT_TORCH))
            floor = statistics.median(walls[torch_key]) + statistics.median(w for w, _ in loads[root])
            cpu_floor = statistics.median(cpus[torch_key]) + statistics.median(c for _, c in loads[root])
            row |= {"floor_s": floor, "times_floor": median / floor, "cpu_floor_s": cpu_floor,
                    "cpu_times_floor": cpu / cpu_floor}
        results.append(row)
        shown = row["command"].replace(str(folder), "TMP")
        against = (f"; {row['cpu_times_floor']:.2f}x the floor in CPU ({row['cpu_floor_s']:.2f} s), "
                   f"{row['times_floor']:.2f}x in wall" if "floor_s" in row else "")
        print(f"{root}  {shown[:48]:48s} CPU {cpu:5.2f} s, wall {median:5.2f} s (min {min(times):.2f}, max "
              f"{max(times):.2f}); torch {'yes' if row['imports_torch'] else 'no'}{against}; imports: "
              + ", ".join(f"{p} {s:.2f}" for p, s in row["heaviest_imports_s"][:3]))
    for root, times in loads.items():
        wall, cpu = (statistics.median(t[i] for t in times) * 1000 for i in (0, 1))
        print(f"{root}  polyalign.load of the model itself: median {wall:.1f} ms wall, {cpu:.1f} ms CPU")
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} CPUs")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "load_average": load,
                                    "repeats": args.repeats, "model_load_s": loads, "results": results},
                                   indent=2) + "\n")


if __name__ == "__main__":
    main()
