#!/usr/bin/env bash
# GPU check: train a recipe for a fixed number of steps on CUDA, once per setting (bf16 autocast,
# fp16 with its gradient scaler, window accumulation with grad checkpointing, and FSDP on two
# GPUs when there are two); print samples/s, peak GPU memory and the loss at start and end of
# each; exit non-zero if a setting fails or its loss did not fall. Then the peer benchmark
# (benchmarks/peer_open_clip.py: polyalign against open_clip's own trainer) on CUDA, bf16 and fp32.
#   scripts/gpu_check.sh [RECIPE] [STEPS]      (default: polyalign/recipes/xor-symile.yaml, 300 steps)
#   PEER_ARGS="--pairs 3 --n 1024" scripts/gpu_check.sh   (options of the peer benchmark; default: its own)
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE=${1:-polyalign/recipes/xor-symile.yaml}
STEPS=${2:-300}
python - "$RECIPE" "$STEPS" <<'PY'
import json, os, subprocess, sys, tempfile, time
from pathlib import Path

import torch
import polyalign

recipe_path, steps = sys.argv[1], int(sys.argv[2])
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device visible to PyTorch")
base = [f"train.max_steps={steps}", "train.epochs=100000", "train.device=cuda", "train.log_every=10"]
recipe = polyalign.load_recipe(recipe_path)
checkpointing = [f"modalities.{m}.encoder.grad_checkpointing=true" for m, node in recipe.modalities.items()
                 if "grad_checkpointing" in node.encoder.options()]  # encoders that offer it
settings = {
    "bf16 (precision: auto)": ["train.precision=auto"],
    "fp16 + gradient scaler": ["train.precision=fp16"],
    "window: accumulate 4, negatives window": ["train.accumulate=4", "train.negatives=window", *checkpointing],
}
gpus = torch.cuda.device_count()
if gpus >= 2:
    settings["fsdp on 2 GPUs"] = ["train.strategy=fsdp"]
print(f"device: {torch.cuda.get_device_name()} x {gpus}  torch {torch.__version__}")
print(f"recipe: {recipe_path}  steps: {steps}  batch: {recipe.train.batch_size}")
failed = []
for name, extra in settings.items():
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if name.startswith("fsdp"):  # two processes: peak memory is not visible from here
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "polyalign", "train",
                   recipe_path, *base, *extra, "--out", tmp]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                print(f"\n{name}: FAILED\n{proc.stderr[-2000:]}")
                failed.append(name)
                continue
            run, peak = next(Path(tmp).iterdir()), "n/a (two processes)"
        else:
            torch.cuda.reset_peak_memory_stats()
            try:
                run = polyalign.train(recipe_path, out=tmp, overrides=base + extra)
            except Exception as exc:  # report every setting, then fail
                print(f"\n{name}: FAILED: {type(exc).__name__}: {exc}")
                failed.append(name)
                continue
            peak = f"{torch.cuda.max_memory_allocated() / 2**20:.1f} MiB"
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps_rows = [r for r in rows if r["kind"] == "step" and "loss" in r]
    first, last = steps_rows[0]["loss"], steps_rows[-1]["loss"]
    speed = sum(r["samples_per_s"] for r in steps_rows[1:]) / max(1, len(steps_rows) - 1)
    print(f"\n{name}  ({' '.join(extra)})")
    print(f"  wall: {wall:.1f} s  samples/s: {speed:.0f}  peak GPU memory: {peak}")
    print(f"  loss: start {first:.4f}  end {last:.4f}")
    if not last < first:
        print("  FAILED: the loss did not fall")
        failed.append(name)
if gpus < 2:
    print("\nfsdp: skipped (needs 2 GPUs)")
if failed:
    sys.exit(f"gpu_check: FAILED: {', '.join(failed)}")
print("gpu_check: OK")
PY
for precision in bf16 fp32; do
  echo
  echo "peer benchmark: polyalign vs open_clip_train on CUDA, $precision"
  # shellcheck disable=SC2086  # PEER_ARGS is a list of options
  python benchmarks/peer_open_clip.py --device cuda --precision "$precision" ${PEER_ARGS:-} \
    --out "benchmarks/results/peer_open_clip_cuda_$precision.json"
done
