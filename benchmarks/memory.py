"""Peak memory and time of one optimizer step over a window of B rows: one batch, or accumulation.

    python benchmarks/memory.py --threads 1                       # B = 1024: every mode, clip and symile n
    python benchmarks/memory.py --threads 1 --batches 512 2048 --rounds 0 --append   # more points for 8 GB

The model is the demo recipe's image (timm resnet10t, 32x32), text (byte_text, 96 bytes) and
audio (log-mel CNN, 0.5 s at 8 kHz) encoders with 64-wide heads, on synthetic inputs of those
shapes (the same rows in every mode). Modes, each a full optimizer step through
``Stepper.step`` (AdamW, clipping):

- ``micro-batch``: one batch of the micro-batch size alone (the reference for the window);
- ``one batch``: one batch of B rows;
- ``window``: ``train.accumulate: B / micro`` micro-batches with ``negatives: window`` (GradCache);
- ``window + ckpt``: the same with ``grad_checkpointing: true`` on the three encoders.

Memory: each cell runs in a fresh subprocess: build the model, warm up with one step of the
same mode on tiny micro-batches (the optimizer state exists, every kernel is loaded), reset the
peak resident set size (``VmHWM``, through ``/proc/self/clear_refs``), take one step. "peak" is
``VmHWM`` minus the resident size before the model was built: model, optimizer state,
gradients, the window's inputs and the step's activations (what a GPU's ``max_memory_allocated``
counts); the step's rise above the resident size just before it is shown beside it. On this CPU
machine the window's inputs are part of it; on a GPU they stay in host memory (one micro-batch
is on the device at a time). The largest B in 8 GB comes from a fit of peak against B.
Time: one subprocess per loss runs the B-row modes in turns, ``--rounds`` times, so the load of
a shared machine falls on all of them alike; it reports medians and the median per-round ratio
to one batch. Prints a Markdown table and writes ``benchmarks/results/memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "demo-multimodal.yaml"
RESULTS = Path(__file__).resolve().parent / "results" / "memory.json"
MODES = ("micro-batch", "one batch", "window", "window + ckpt")
LOSSES = {"clip": {"plugin": "clip"}, "symile n": {"plugin": "symile", "negatives": "n"}}
MODALITIES = ("image", "text", "audio")


def recipe_for(loss: str, mode: str, rows: int, micro: int):
    """The demo recipe's image, text and audio encoders, set up for one mode."""
    from polyalign.core.recipe import validate_recipe

    raw = yaml.safe_load(RECIPE.read_text())
    raw["modalities"] = {m: raw["modalities"][m] for m in MODALITIES}
    for node in raw["modalities"].values():
        node["encoder"]["grad_checkpointing"] = mode == "window + ckpt"
    raw["loss"] = LOSSES[loss]
    raw["eval"] = []
    window = mode.startswith("window")
    raw["train"].update({"batch_size": micro if window else rows, "accumulate": rows // micro if window else 1,
                         "negatives": "window"})
    return validate_recipe(raw, "benchmark")


def synthetic_window(rows: int, size: int, seed: int = 0) -> list:
    """``rows`` rows of the demo encoders' input shapes (32x32 RGB images, 96 byte tokens, 0.5 s at
    8 kHz) in batches of ``size``: the same rows whatever ``size`` is."""
    import torch

    from polyalign.core.batch import Batch

    g = torch.Generator().manual_seed(seed)
    image, audio = torch.randn(rows, 3, 32, 32, generator=g), torch.randn(rows, 4000, generator=g)
    tokens = torch.randint(2, 258, (rows, 96), generator=g)
    return [Batch({"image": image[i:i + size], "audio": audio[i:i + size],
                   "text": {"input_ids": tokens[i:i + size], "attention_mask": torch.ones_like(tokens[i:i + size])}},
                  {m: torch.ones(min(size, rows - i), dtype=torch.bool) for m in MODALITIES},
                  torch.arange(i, min(i + size, rows)))
            for i in range(0, rows, size)]


def build_stepper(loss: str, mode: str, rows: int, micro: int):
    """A :class:`Stepper` over a freshly built model (seed 0) for one mode; also its micro-batch size."""
    import torch

    from polyalign.core.assemble import build_loss, build_model
    from polyalign.core.plugin_manager import default_plugins
    from polyalign.training.optim import build_optimizer
    from polyalign.training.step import Stepper

    recipe = recipe_for(loss, mode, rows, micro)
    plugins = default_plugins()
    torch.manual_seed(0)
    model, loss_fn = build_model(recipe, plugins), build_loss(recipe, plugins)
    optimizer, scheduler = build_optimizer(model, loss_fn, recipe, 1000)
    stepper = Stepper(recipe, model.train(), model, loss_fn, optimizer, scheduler, torch.device("cpu"))
    k = recipe.train.accumulate
    stepper.step(synthetic_window(4 * k, 4, seed=1))  # warm-up: the same path on tiny micro-batches
    return stepper, recipe.train.batch_size


def run_one(spec: dict) -> dict:
    """Peak memory of one cell, in this process (called in a fresh subprocess)."""
    import torch

    torch.set_num_threads(spec["threads"])
    before = _status_kb("VmRSS")
    stepper, size = build_stepper(spec["loss"], spec["mode"], spec["rows"], spec["micro"])
    window = synthetic_window(spec["rows"], size)
    Path("/proc/self/clear_refs").write_text("5")
    start = _status_kb("VmRSS")
    t0 = time.perf_counter()
    record = stepper.step(window)
    seconds = time.perf_counter() - t0
    return {"peak_mb": (_status_kb("VmHWM") - before) / 1024, "step_rise_mb": (_status_kb("VmHWM") - start) / 1024,
            "seconds": seconds, "loss_value": float(record.loss)}


def run_timing(spec: dict) -> dict:
    """Seconds per step of the B-row modes, interleaved round by round in this process so that
    the machine's background load falls on all of them alike; the ratio to one batch is the
    median of the per-round ratios."""
    import torch

    torch.set_num_threads(spec["threads"])
    modes = [m for m in MODES if m != "micro-batch"]
    runs = {mode: build_stepper(spec["loss"], mode, spec["rows"], spec["micro"]) for mode in modes}
    windows = {mode: synthetic_window(spec["rows"], size) for mode, (_, size) in runs.items()}
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    values = {}
    for _ in range(spec["rounds"]):
        for mode, (stepper, _) in runs.items():
            t0 = time.perf_counter()
            values[mode] = float(stepper.step(windows[mode]).loss)
            times[mode].append(time.perf_counter() - t0)
    return {mode: {"seconds": statistics.median(t), "all_seconds": t, "loss_value": values[mode],
                   "vs_one_batch": statistics.median(a / b for a, b in zip(t, times["one batch"]))}
            for mode, t in times.items()}


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def largest_fitting(points: list[tuple[int, float]], budget_mb: float) -> tuple[float, str]:
    """The B at which a fit of peak MB against B reaches ``budget_mb``, and how it was found.

    Three or more batch sizes: a least-squares quadratic (the loss's N x N logits grow with B²);
    two: a line. Measured when the budget lies inside the measured range, else extrapolated.
    """
    import numpy as np

    if len(points) < 2:
        return float("nan"), "needs two batch sizes"
    b, m = np.array(points, dtype=float).T
    coef = np.polyfit(b, m, 2 if len(points) >= 3 else 1)
    roots = [r.real for r in np.roots(coef - np.eye(len(coef))[-1] * budget_mb)
             if abs(r.imag) < 1e-9 and r.real > 0]
    if not roots:
        return float("inf"), "the fit never reaches the budget"
    largest = min(roots)
    kind = "quadratic" if len(points) >= 3 else "linear"
    where = "interpolated" if largest <= b.max() else "extrapolated"
    return largest, f"{where}, {kind} fit through B = {', '.join(str(int(x)) for x in b)}"


def table(results: list[dict], timings: list[dict], rows: int) -> str:
    """Markdown: per loss and mode, step time and peak at ``rows``, the ratios, the 8 GB batch."""
    lines = ["| loss | mode | B | seconds / step | time vs one batch | peak MB (step's rise) | "
             "peak vs one micro-batch | largest B in 8 GB |", "|---|---|---|---|---|---|---|---|"]
    for loss in LOSSES:
        done = [r for r in results if r["loss"] == loss and "peak_mb" in r]
        timing = next((t["modes"] for t in timings if t["loss"] == loss and t["rows"] == rows and "modes" in t), {})
        micro = next((r for r in done if r["mode"] == "micro-batch"), None)
        for mode in MODES:
            r = micro if mode == "micro-batch" else next((c for c in done if c["mode"] == mode and c["rows"] == rows),
                                                          None)
            if r is None:
                continue
            seconds = timing.get(mode, {}).get("seconds", r["seconds"])
            vs_big = f"{timing[mode]['vs_one_batch']:.2f}x" if mode.startswith("window") and mode in timing else ""
            vs_micro = f"{r['peak_mb'] / micro['peak_mb']:.2f}x" if micro and r is not micro else ""
            eight = ""
            if mode != "micro-batch":
                fit, how = largest_fitting(sorted((c["rows"], c["peak_mb"]) for c in done if c["mode"] == mode), 8192)
                eight = f"{fit:,.0f} ({how})" if fit == fit else how
            lines.append(f"| {loss} | {mode} | {r['rows']} | {seconds:.3g} | {vs_big} | {r['peak_mb']:.0f} "
                         f"({r['step_rise_mb']:.0f}) | {vs_micro} | {eight} |")
    return "\n".join(lines)


def _subprocess(flag: str, spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, flag, json.dumps(spec)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    row = dict(spec)
    if proc.returncode == 0:
        row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
    else:
        row["error"] = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:200]
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1024], help="window sizes B (memory cells)")
    parser.add_argument("--micro", type=int, default=128, help="micro-batch size of the window modes")
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds at --report-batch "
                                                              "(0: no timing cells)")
    parser.add_argument("--report-batch", type=int, default=1024, help="the B whose time and peak the table shows")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--append", action="store_true", help="add to the results file instead of replacing it")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--timing", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one or args.timing:
        print(json.dumps(run_one(json.loads(args.one)) if args.one else {"modes": run_timing(json.loads(args.timing))}))
        return
    old = json.loads(args.out.read_text()) if args.append and args.out.is_file() else {}
    results, timings = [], []
    for loss in args.losses:
        for mode in args.modes:
            for rows in ([args.micro] if mode == "micro-batch" else args.batches):
                spec = {"loss": loss, "mode": mode, "rows": rows, "micro": args.micro, "threads": args.threads,
                        "load_average": os.getloadavg()}
                results.append(_subprocess("--one", spec))
                shown = {k: results[-1][k] for k in ("seconds", "peak_mb", "step_rise_mb", "error")
                         if k in results[-1]}
                print(f"{loss:9s} {mode:14s} B={rows:5d} {shown}", flush=True)
        if args.rounds:
            spec = {"loss": loss, "rows": args.report_batch, "micro": args.micro, "threads": args.threads,
                    "rounds": args.rounds, "load_average": os.getloadavg()}
            timings.append(_subprocess("--timing", spec))
            print(f"{loss:9s} timing B={args.report_batch}: "
                  f"{ {m: (t['seconds'], t['vs_one_batch']) for m, t in timings[-1].get('modes', {}).items()} }"
                  f"{timings[-1].get('error', '')}", flush=True)
    key = lambda r: (r["loss"], r.get("mode"), r["rows"])  # noqa: E731
    results = [r for r in old.get("results", []) if key(r) not in {key(n) for n in results}] + results
    timings = [t for t in old.get("timings", []) if key(t) not in {key(n) for n in timings}] + timings
    print()
    print(table(results, timings, args.report_batch))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from losses import machine

    args.out.write_text(json.dumps({"machine": machine(), "threads": args.threads, "micro": args.micro,
                                    "load_average_at_end": os.getloadavg(), "results": results,
                                    "timings": timings}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
