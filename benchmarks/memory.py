"""Peak memory and time of one optimizer step over a window of B rows: one batch, or accumulation.

    python benchmarks/memory.py                    # B = 1024: every mode, clip and symile n
    python benchmarks/memory.py --batches 512 1024 2048 --repeats 1   # the curve for the 8 GB column

The model is the demo recipe's image (timm resnet10t, 32x32), text (byte_text, 96 bytes) and
audio (log-mel CNN, 0.5 s at 8 kHz) encoders with 64-wide heads, on synthetic inputs of those
shapes. Modes, each a full optimizer step through ``Stepper.step`` (AdamW, clipping):

- ``micro-batch``: one batch of the micro-batch size alone (the reference for the window);
- ``one batch``: one batch of B rows;
- ``window``: ``train.accumulate: B / micro`` micro-batches with ``negatives: window`` (GradCache);
- ``window + ckpt``: the same with ``grad_checkpointing: true`` on the three encoders.

Each cell runs in a fresh subprocess: build the model, warm up with one step of the same mode
on tiny micro-batches (so the optimizer state exists and every kernel is loaded), reset the
peak resident set size (``VmHWM``, through ``/proc/self/clear_refs``), then time steps. "peak"
is ``VmHWM`` during the first measured step minus the resident size before the model was built:
model, optimizer state, gradients, the window's inputs and the step's activations, i.e. what a
GPU's ``max_memory_allocated`` would count. On this CPU machine the window's inputs are part of
it; on a GPU they stay in host memory (one micro-batch is moved to the device at a time).
Prints a Markdown table and writes ``benchmarks/results/memory.json``.
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


def synthetic_batch(rows: int, seed: int):
    """Inputs of the demo encoders' shapes: 32x32 RGB images, 96 byte tokens, 0.5 s at 8 kHz."""
    import torch

    from polyalign.core.batch import Batch

    g = torch.Generator().manual_seed(seed)
    inputs = {"image": torch.randn(rows, 3, 32, 32, generator=g),
              "text": {"input_ids": torch.randint(2, 258, (rows, 96), generator=g),
                       "attention_mask": torch.ones(rows, 96, dtype=torch.long)},
              "audio": torch.randn(rows, 4000, generator=g)}
    present = {m: torch.ones(rows, dtype=torch.bool) for m in MODALITIES}
    return Batch(inputs, present, torch.arange(rows))


def run_one(spec: dict) -> dict:
    """Measure one cell in this process (called in a subprocess)."""
    import torch

    from polyalign.core.assemble import build_loss, build_model
    from polyalign.core.plugins import default_plugins
    from polyalign.training.optim import build_optimizer
    from polyalign.training.step import Stepper

    torch.set_num_threads(spec["threads"])
    before = _status_kb("VmRSS")
    rows, micro, mode = spec["rows"], spec["micro"], spec["mode"]
    recipe = recipe_for(spec["loss"], mode, rows, micro)
    plugins = default_plugins()
    torch.manual_seed(0)
    model, loss = build_model(recipe, plugins), build_loss(recipe, plugins)
    optimizer, scheduler = build_optimizer([model, loss], recipe.train, 1000)
    stepper = Stepper(recipe, model, model, loss, optimizer, scheduler, torch.device("cpu"))
    model.train()
    k, size = recipe.train.accumulate, recipe.train.batch_size
    stepper.step([synthetic_batch(4, 100 + i) for i in range(k)])  # warm-up: same path, tiny micro-batches
    window = [synthetic_batch(size, i) for i in range(k)]
    Path("/proc/self/clear_refs").write_text("5")
    start = _status_kb("VmRSS")
    times = []
    for i in range(spec["repeats"]):
        t0 = time.perf_counter()
        record = stepper.step(window)
        times.append(time.perf_counter() - t0)
        if i == 0:
            peak, rise = (_status_kb("VmHWM") - before) / 1024, (_status_kb("VmHWM") - start) / 1024
    return {"seconds": statistics.median(times), "runs": len(times), "peak_mb": peak, "step_rise_mb": rise,
            "loss_value": float(record.loss)}


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


def table(results: list[dict], rows: int) -> str:
    """Markdown: per loss and mode, the step time and peak at ``rows``, ratios and the 8 GB batch."""
    lines = ["| loss | mode | B | seconds / step | peak MB (step's rise) | peak vs one micro-batch | "
             "time vs one batch | largest B in 8 GB |", "|---|---|---|---|---|---|---|---|"]
    for loss in LOSSES:
        done = [r for r in results if r["loss"] == loss and "peak_mb" in r]
        micro = next((r for r in done if r["mode"] == "micro-batch"), None)
        big = next((r for r in done if r["mode"] == "one batch" and r["rows"] == rows), None)
        for mode in MODES:
            r = micro if mode == "micro-batch" else next((c for c in done if c["mode"] == mode and c["rows"] == rows),
                                                          None)
            if r is None:
                continue
            vs_micro = f"{r['peak_mb'] / micro['peak_mb']:.2f}x" if micro and r is not micro else ""
            vs_big = f"{r['seconds'] / big['seconds']:.2f}x" if big and mode.startswith("window") else ""
            eight = ""
            if mode != "micro-batch":
                fit, how = largest_fitting(sorted((c["rows"], c["peak_mb"]) for c in done if c["mode"] == mode), 8192)
                eight = f"{fit:,.0f} ({how})" if fit == fit else how
            lines.append(f"| {loss} | {mode} | {r['rows']} | {r['seconds']:.3g} | {r['peak_mb']:.0f} "
                         f"({r['step_rise_mb']:.0f}) | {vs_micro} | {vs_big} | {eight} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1024], help="window sizes B")
    parser.add_argument("--micro", type=int, default=128, help="micro-batch size of the window modes")
    parser.add_argument("--losses", nargs="+", default=list(LOSSES), choices=list(LOSSES))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps (median reported)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--append", action="store_true", help="add to the results file instead of replacing it")
    parser.add_argument("--report-batch", type=int, default=1024, help="the B whose time and peak the table shows")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    previous = json.loads(args.out.read_text())["results"] if args.append and args.out.is_file() else []
    results = []
    for loss in args.losses:
        for mode in args.modes:
            for rows in ([args.micro] if mode == "micro-batch" else args.batches):
                spec = {"loss": loss, "mode": mode, "rows": rows, "micro": args.micro, "threads": args.threads,
                        "repeats": args.repeats, "load_average": os.getloadavg()}
                proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True,
                                      text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
                row = dict(spec)
                if proc.returncode == 0:
                    row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
                else:
                    row["error"] = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:200]
                results.append(row)
                shown = {k: row[k] for k in ("seconds", "peak_mb", "step_rise_mb", "loss_value", "error") if k in row}
                print(f"{loss:9s} {mode:14s} B={rows:5d} {shown}", flush=True)
    merged = [r for r in previous if not any((r["loss"], r["mode"], r["rows"]) == (n["loss"], n["mode"], n["rows"])
                                             for n in results)] + results
    print()
    print(table(merged, args.report_batch))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from losses import machine

    args.out.write_text(json.dumps({"machine": machine(), "threads": args.threads, "micro": args.micro,
                                    "results": merged}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
