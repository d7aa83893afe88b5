"""Training on a busy machine: the slowdown of an XOR training under N busy processes against quiet.

Each measurement is a fresh Python process that trains ``recipes/xor-clip.yaml`` (reduced) with
``polyalign.train`` and reports the seconds of its training loop and the torch threads it ran
on. An arm is a ``train.threads`` setting (``auto``: polyalign's choice; a number: that many)
and an OpenMP wait policy: ``polyalign`` (what importing polyalign sets: passive), ``unset``
(torch imported before polyalign, so OpenMP keeps its own default: spin a while, then sleep; as
before polyalign set it), or ``passive``/``active`` (``OMP_WAIT_POLICY`` set for the process).
For every repeat, each arm runs once quiet and once beside ``--busy`` processes that spin on a
CPU each (pure Python loops, started and stopped by this script); arms and conditions are
interleaved, and the table gives medians and the slowdown (contended / quiet).

    python benchmarks/contention.py [--busy 3] [--repeats 3] [--arms auto:polyalign 2:unset 1:unset]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "contention.json"
BUSY = "while True: pass"


def child(threads: str, steps: int) -> None:
    """Train once in this process and print ``{"seconds", "threads"}`` as JSON."""
    if os.environ.get("CONTENTION_IMPORT") == "polyalign-first":
        import polyalign  # sets OMP_WAIT_POLICY (passive) before torch loads OpenMP
    import torch  # otherwise first: OpenMP keeps its own wait policy (or the one set in the environment)
    import yaml

    import polyalign
    from polyalign.core.plugin_manager import make_plugins

    class LoopClock:
        start = end = 0.0

        @polyalign.hookimpl
        def on_train_start(self):
            LoopClock.start = time.perf_counter()

        @polyalign.hookimpl
        def on_train_end(self):
            LoopClock.end = time.perf_counter()

    overrides = [f"train.threads={threads}", f"train.max_steps={steps}", "train.epochs=1000", "data.n_train=4096",
                 "data.n_val=256", "data.n_test=256", "train.batch_size=256", "model.embed_dim=64",
                 "train.log_every=50", "eval=[]", *[f"modalities.{m}.encoder.hidden=[128]" for m in "abc"]]
    with tempfile.TemporaryDirectory() as tmp:
        run = polyalign.train(ROOT / "recipes" / "xor-clip.yaml", out=tmp, overrides=overrides,
                              plugins=make_plugins(extra=[LoopClock()]))
        chosen = yaml.safe_load((run / "recipe.yaml").read_text(encoding="utf-8"))["train"]["threads"]
    print(json.dumps({"seconds": LoopClock.end - LoopClock.start, "threads": chosen,
                      "torch_default": torch.get_num_threads()}))


def measure(threads: str, wait: str, steps: int) -> dict:
    """One training in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    if wait in ("active", "passive"):
        env["OMP_WAIT_POLICY"] = wait.upper()
    elif wait == "polyalign":
        env["CONTENTION_IMPORT"] = "polyalign-first"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, __file__, "--child", threads, "--steps", str(steps)], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def busy_processes(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(n)]


def stop(processes: list[subprocess.Popen]) -> None:
    for p in processes:
        p.kill()
        p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--busy", type=int, default=3, help="busy processes beside the contended runs")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=300, help="optimizer steps per training")
    ap.add_argument("--arms", nargs="+", default=["auto:polyalign", "2:unset", "1:unset"],
                    help="THREADS:WAIT pairs; THREADS auto or a number, WAIT polyalign, unset, passive or active")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.steps)
        return
    arms = [tuple(a.split(":")) for a in args.arms]
    times: dict[tuple, dict[str, list[float]]] = {a: {"quiet": [], "busy": []} for a in arms}
    chosen: dict[tuple, int] = {}
    loads = [os.getloadavg()]
    for r in range(args.repeats):
        for arm in arms if r % 2 == 0 else arms[::-1]:
            for condition in ("quiet", "busy") if r % 2 == 0 else ("busy", "quiet"):
                spinning = busy_processes(args.busy) if condition == "busy" else []
                try:
                    result = measure(*arm, args.steps)
                finally:
                    stop(spinning)
                times[arm][condition].append(result["seconds"])
                chosen[arm] = result["threads"]
                print(f"repeat {r} {':'.join(arm)} {condition}: {result['seconds']:.2f} s "
                      f"({result['threads']} threads)", flush=True)
        loads.append(os.getloadavg())
    rows = []
    for arm in arms:
        quiet, busy = statistics.median(times[arm]["quiet"]), statistics.median(times[arm]["busy"])
        rows.append({"threads": arm[0], "wait": arm[1], "threads_used": chosen[arm], "quiet_s": round(quiet, 2),
                     "busy_s": round(busy, 2), "slowdown": round(busy / quiet, 2), "runs": times[arm]})
    print(f"\n{args.busy} busy processes, {args.repeats} repeats, {args.steps} steps; "
          f"load averages {[round(x, 2) for x in loads[0]]} at start, {[round(x, 2) for x in loads[-1]]} at end")
    print("| train.threads | OpenMP wait | threads used | quiet s | busy s | slowdown |\n|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['threads']} | {row['wait']} | {row['threads_used']} | {row['quiet_s']} | {row['busy_s']} "
              f"| {row['slowdown']}x |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"busy": args.busy, "repeats": args.repeats, "steps": args.steps,
                                    "cpus": len(os.sched_getaffinity(0)), "load_averages": loads, "rows": rows},
                                   indent=2) + "\n")


if __name__ == "__main__":
    main()
