"""Start-up time of the ``polyalign`` command: the wall time of commands that train nothing, and
what their imports cost (``python -X importtime``).

Each command runs in a fresh process ``--repeats`` times; with several ``--root`` source trees
(e.g. this one and an older checkout) the runs are interleaved, so a busy machine slows every arm
alike. The table gives the median wall time and, from one ``-X importtime`` run, the import time of
the heaviest top-level packages.

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
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "startup.json"
COMMANDS = [["--help"], ["recipes"], ["plugins"], ["validate", "xor-symile"]]
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def run(root: Path, args: list[str], importtime: bool = False) -> tuple[float, str]:
    """Wall seconds of ``python -m polyalign ARGS`` with ``root`` first on the path, and its stderr."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    flags = ["-X", "importtime"] if importtime else []
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *flags, "-m", "polyalign", *args], cwd=root, env=env,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"polyalign {' '.join(args)} failed in {root}:\n{proc.stderr[-2000:]}")
    return wall, proc.stderr


def heaviest_imports(stderr: str, top: int = 5) -> list[tuple[str, float]]:
    """(top-level package, cumulative seconds) of the costliest packages imported, from -X importtime."""
    cost: dict[str, float] = {}
    for self_us, cumulative_us, indent, name in IMPORT_LINE.findall(stderr):
        package = name.split(".")[0]
        if len(indent) <= 1 or "." not in name:  # a package's first import holds its whole cost
            cost[package] = max(cost.get(package, 0.0), int(cumulative_us) / 1e6)
    return sorted(cost.items(), key=lambda kv: -kv[1])[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", action="append", type=Path, help="source tree(s) to time (default: this one)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    roots = [r.resolve() for r in args.root or [Path(__file__).resolve().parents[1]]]
    walls: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeats):  # interleaved: every arm sees the same load
        for args_ in COMMANDS:
            for root in roots:
                walls.setdefault((str(root), " ".join(args_)), []).append(run(root, args_)[0])
    results = []
    for (root, command), times in walls.items():
        imports = heaviest_imports(run(Path(root), command.split(), importtime=True)[1])
        results.append({"root": root, "command": f"polyalign {command}", "median_s": statistics.median(times),
                        "walls_s": times, "heaviest_imports_s": imports})
        print(f"{root}  polyalign {command:35s} median {statistics.median(times):.2f} s  "
              f"(min {min(times):.2f}, max {max(times):.2f}); imports: "
              + ", ".join(f"{p} {s:.2f}" for p, s in imports))
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} CPUs")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": platform.platform(), "cpus": os.cpu_count(), "load_average": load,
                                    "repeats": args.repeats, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
