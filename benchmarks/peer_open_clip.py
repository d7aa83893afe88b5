"""polyalign against open_clip's own trainer (``open_clip_train.main``), side by side.

Both train the same open_clip architecture (a ViT-S-like CLIP: image ViT 64 px, patch 8, width
192, 3 layers; text width 128, 3 layers; embed_dim 128) from the same random initial weights
(one safetensors file) on the same PNG + caption set (a CSV for open_clip, a manifest for
polyalign), with batch 64, AdamW, warmup + cosine, gradient clipping at 1.0, one DataLoader
worker, one torch thread, fp32 (``--device cuda`` with ``--precision bf16`` or ``fp32`` on a GPU),
a checkpoint (weights and optimizer state) at the end of each epoch — polyalign's default, and
open_clip's ``--save-frequency 1``. polyalign's recipe uses ``model.head: none``, so both models
have the same parameters.

Each run is a fresh process (imports and start-up count); the pairs are interleaved (polyalign
first in even pairs, open_clip first in odd ones). Reported per trainer: median samples/s
(training samples over the process's wall time), CPU seconds per sample (the process and its
children), peak resident memory of the host (``VmHWM``) and, on a GPU, torch's peak allocated, the final
training loss, and polyalign's samples/s over open_clip's: the geometric mean of the pairs'
ratios, with a bootstrap 95% interval over the pairs.

    python benchmarks/peer_open_clip.py [--n 2048] [--epochs 2] [--pairs 5] [--device cpu] [--precision fp32]
    python benchmarks/peer_open_clip.py --forward-backward [--repeats 7]   # where a step's time goes

Writes benchmarks/results/peer_open_clip.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polyalign

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "peer_open_clip.json"
MODEL_CFG = {"embed_dim": 128,
             "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 192, "layers": 3, "head_width": 64},
             "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 3}}
WORDS = ["red", "green", "blue", "circle", "square", "small", "large", "left", "right", "bright", "dark", "stripe"]

# Runs a trainer's main in this process, then prints its peak memory (host; GPU: torch's peak allocated)
# and CPU seconds (with children).
RUNNER = """
import json, os, re, sys, time
start = time.perf_counter()
kind, args = sys.argv[1], sys.argv[2:]
if kind == "open_clip":
    from open_clip_train.main import main
    main(args)
else:
    from polyalign.cli import main
    code = main(args)
    assert code == 0, code
t = os.times()
status = open("/proc/self/status").read()
import torch
gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_initialized() else None
print("RESULT", json.dumps({"wall": time.perf_counter() - start, "cpu": t.user + t.system + t.children_user +
      t.children_system, "peak_mb": int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024,
      "gpu_peak_mb": gpu}))
"""


def make_data(folder: Path, n: int) -> tuple[Path, Path]:
    """``n`` PNG images with captions: a CSV (open_clip) and a manifest folder (polyalign)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        image[rng.integers(0, 48):, rng.integers(0, 48):] = rng.integers(0, 255, 3)
        path = folder / "images" / f"{i:05d}.png"
        Image.fromarray(image).save(path)
        rows.append((str(path), " ".join(random.Random(i).choices(WORDS, k=6))))
    csv = folder / "train.csv"
    csv.write_text("filepath\ttitle\n" + "".join(f"{p}\t{c}\n" for p, c in rows), encoding="utf-8")
    manifest = folder / "manifest"
    manifest.mkdir(exist_ok=True)
    (manifest / "train.jsonl").write_text("".join(json.dumps({"image": p, "text": c}) + "\n" for p, c in rows),
                                          encoding="utf-8")
    (manifest / "test.jsonl").write_text("".join(json.dumps({"image": p, "text": c}) + "\n" for p, c in rows[:64]),
                                         encoding="utf-8")
    return csv, manifest


def recipe(folder: Path, model: Path, weights: Path, args: argparse.Namespace) -> Path:
    """The polyalign recipe of the comparison (head none: open_clip's parameters exactly)."""
    tower = {"plugin": "open_clip", "model": str(model), "pretrained": str(weights)}
    text = {"name": "peer-open-clip", "seed": 0, "data": {"plugin": "manifest", "path": str(folder / "manifest")},
            "modalities": {"image": {"encoder": {**tower, "tower": "image"}},
                           "text": {"encoder": {**tower, "tower": "text"}}},
            "model": {"embed_dim": MODEL_CFG["embed_dim"], "normalize": "l2", "head": "none"},
            "loss": {"plugin": "clip"},
            "train": {"epochs": args.epochs, "batch_size": args.batch, "lr": args.lr, "weight_decay": 0.1,
                      "warmup_steps": args.warmup, "schedule": "cosine", "grad_clip": 1.0, "num_workers": 1,
                      "threads": 1, "device": args.device, "deterministic": args.deterministic,
                      "precision": "bf16" if args.precision == "bf16" else "fp32", "log_every": 1},
            "eval": [], "logging": ["jsonl"]}
    path = folder / "peer.yaml"
    path.write_text(json.dumps(text), encoding="utf-8")
    return path


def run(kind: str, argv: list[str], cwd: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", RUNNER, kind, *argv], cwd=cwd, env=env, capture_output=True,
                          check=False, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{done.stderr[-4000:]}")
    return json.loads([x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1][len("RESULT "):])


def polyalign_loss(out: Path) -> float:
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r][-1]


def open_clip_loss(logs: Path) -> float:
    text = "".join(p.read_text() for p in logs.rglob("out.log"))
    return float(re.findall(r"Contrastive_loss: ([0-9.]+)", text)[-1])


def paired_ratio(a: list[float], b: list[float], draws: int = 10000) -> tuple[float, float, float]:
    """The geometric mean of the pairs' ratios a_i / b_i and its bootstrap 95% interval (the pairs
    resampled). The two runs of a pair ran back to back, so a slow spell of the machine slows both:
    their ratio carries less of it than a ratio of medians over all runs."""
    logs = [math.log(x / y) for x, y in zip(a, b)]
    rng = random.Random(0)
    stats = sorted(statistics.fmean(rng.choices(logs, k=len(logs))) for _ in range(draws))
    return (math.exp(statistics.fmean(logs)), math.exp(stats[int(0.025 * draws)]),
            math.exp(stats[int(0.975 * draws) - 1]))


def forward_backward(args: argparse.Namespace) -> None:
    """Seconds (CPU, this process) of one forward + backward on a fixed batch: open_clip's CLIP
    model and loss against polyalign's model (head none and linear) and clip loss on the same
    weights, with ``torch.use_deterministic_algorithms`` off and on; interleaved, medians."""
    import open_clip
    import torch

    from polyalign.core.assemble import build_loss, build_model
    from polyalign.core.plugin_manager import default_plugins

    torch.set_num_threads(1)
    plugins = default_plugins()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        weights = save_random_model_quiet(work / "model", MODEL_CFG)
        reference = open_clip.create_model(f"local-dir:{work / 'model'}")  # weights: the folder's file
        peer = recipe(work, work / "model", weights, args)
        models = {}
        for head in ("none", "linear"):
            r = polyalign.load_recipe(peer, [f"model.head={head}"])
            models[head] = (build_model(r, plugins), build_loss(r, plugins))
    images = torch.randn(args.batch, 3, 64, 64)
    texts = torch.randint(0, 49408, (args.batch, 32))
    ref_loss = open_clip.ClipLoss()

    def open_clip_step() -> None:
        image_features, text_features, logit_scale = reference(images, texts)[:3]
        ref_loss(image_features, text_features, logit_scale).backward()

    def polyalign_step(head: str) -> None:
        model, loss = models[head]
        loss(model({"image": images, "text": texts})).loss.backward()

    arms = {"open_clip": open_clip_step, "polyalign, head none": lambda: polyalign_step("none"),
            "polyalign, head linear": lambda: polyalign_step("linear")}
    times: dict[str, list[float]] = {f"{a}, deterministic {d}": [] for a in arms for d in ("off", "on")}
    for _ in range(args.repeats):
        for deterministic in (False, True):
            torch.use_deterministic_algorithms(deterministic, warn_only=True)
            for name, step in arms.items():
                t0 = time.process_time()
                step()
                times[f"{name}, deterministic {'on' if deterministic else 'off'}"].append(time.process_time() - t0)
    print(f"forward + backward, batch {args.batch}, CPU seconds (median of {args.repeats}); load averages "
          f"{[round(x, 2) for x in os.getloadavg()]}")
    print("| model | CPU s |\n|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {statistics.median(seconds):.3f} |")


def save_random_model_quiet(folder: Path, cfg: dict) -> Path:
    from polyalign.plugins.encoders.open_clip import save_random_model

    return save_random_model(folder, cfg, seed=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2048, help="image-caption pairs")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--pairs", type=int, default=5, help="interleaved pairs of runs")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=True,
                    help="polyalign's train.deterministic (open_clip sets nothing)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--forward-backward", action="store_true", help="only time one forward + backward of "
                    "each model in this process (open_clip; polyalign with head none and linear)")
    ap.add_argument("--repeats", type=int, default=7, help="with --forward-backward: steps per arm")
    args = ap.parse_args()
    if args.forward_backward:
        forward_backward(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        csv, _ = make_data(work, args.n)
        weights = save_random_model_quiet(work / "model", MODEL_CFG)
        peer = recipe(work, work / "model", weights, args)
        precision = "amp_bf16" if args.precision == "bf16" else "fp32"
        results: dict[str, list[dict]] = {"polyalign": [], "open_clip": []}
        load_before = os.getloadavg()
        for i in range(args.pairs):
            order = ["polyalign", "open_clip"] if i % 2 == 0 else ["open_clip", "polyalign"]
            for kind in order:
                out = work / f"{kind}-{i}"
                out.mkdir()
                if kind == "polyalign":
                    result = run(kind, ["train", str(peer), "--out", str(out)], work)
                    result["loss"] = polyalign_loss(out)
                else:
                    result = run(kind, [
                        "--train-data", str(csv), "--dataset-type", "csv", "--csv-img-key", "filepath",
                        "--csv-caption-key", "title", "--model", f"local-dir:{work / 'model'}", "--pretrained",
                        str(weights), "--batch-size", str(args.batch), "--epochs", str(args.epochs), "--lr",
                        str(args.lr), "--wd", "0.1", "--warmup", str(args.warmup), "--grad-clip-norm", "1.0",
                        "--workers", "1", "--precision", precision, "--seed", "0", "--logs", str(out),
                        "--name", "run", "--save-frequency", "1", "--log-every-n-steps", "1",
                        "--device", args.device], work)
                    result["loss"] = open_clip_loss(out)
                result["samples_per_s"] = (args.n // args.batch) * args.batch * args.epochs / result["wall"]
                result["cpu_s_per_sample"] = result["cpu"] / ((args.n // args.batch) * args.batch * args.epochs)
                results[kind].append(result)
                print(f"pair {i} {kind}: {result['samples_per_s']:.1f} samples/s, peak {result['peak_mb']:.0f} MB, "
                      f"loss {result['loss']:.4f}", flush=True)
    speed = {k: [r["samples_per_s"] for r in v] for k, v in results.items()}
    ratio, low, high = paired_ratio(speed["polyalign"], speed["open_clip"])
    measures = ["samples_per_s", "cpu_s_per_sample", "peak_mb", "loss", "wall"]
    if args.device != "cpu":
        measures.append("gpu_peak_mb")
    summary = {k: {m: statistics.median(r[m] for r in v) for m in measures} for k, v in results.items()}
    memory = {m: summary["polyalign"][m] / summary["open_clip"][m] for m in measures if m.endswith("peak_mb")}
    print(f"\n{args.pairs} pairs, n {args.n}, {args.epochs} epochs, batch {args.batch}, {args.device} "
          f"{args.precision}; load averages {[round(x, 2) for x in load_before]} at start, "
          f"{[round(x, 2) for x in os.getloadavg()]} at end")
    gpu = args.device != "cpu"
    print("| trainer | samples/s | CPU s / sample | peak host MB |" + (" peak GPU MB |" if gpu else "") + " final loss |")
    print("|---|---|---|---|---|" + ("---|" if gpu else ""))
    for k, s in summary.items():
        print(f"| {k} | {s['samples_per_s']:.1f} | {s['cpu_s_per_sample']:.4f} | {s['peak_mb']:.0f} | "
              + (f"{s['gpu_peak_mb']:.0f} | " if gpu else "") + f"{s['loss']:.4f} |")
    print(f"polyalign / open_clip samples/s: {ratio:.2f}x (95% bootstrap interval {low:.2f}-{high:.2f}); peak memory "
          + ", ".join(f"{'GPU' if m.startswith('gpu') else 'host'} {r:.2f}x" for m, r in memory.items()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": results,
                                    "summary": summary, "ratio": ratio, "interval": [low, high],
                                    "memory_ratio": memory, "load_average_before": load_before,
                                    "load_average_after": os.getloadavg(), "finished": time.time()},
                                   indent=2) + "\n")


if __name__ == "__main__":
    main()
