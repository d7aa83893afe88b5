#!/usr/bin/env bash
# GPU check: train a recipe for a fixed number of steps on CUDA; print samples/s, peak GPU memory
# and the loss at start and end; exit non-zero if the loss did not fall.
#   scripts/gpu_check.sh [RECIPE] [STEPS]      (default: recipes/xor-symile.yaml, 300 steps)
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE=${1:-recipes/xor-symile.yaml}
STEPS=${2:-300}
python - "$RECIPE" "$STEPS" <<'PY'
import json, sys, tempfile, time
import torch
import polyalign

recipe_path, steps = sys.argv[1], int(sys.argv[2])
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device visible to PyTorch")
recipe = polyalign.load_recipe(recipe_path, [f"train.max_steps={steps}", "train.epochs=100000", "train.device=cuda",
                                             "train.precision=auto", "train.log_every=10"])
torch.cuda.reset_peak_memory_stats()
with tempfile.TemporaryDirectory() as tmp:
    t0 = time.perf_counter()
    run = polyalign.train(recipe, out=tmp)
    wall = time.perf_counter() - t0
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
steps_rows = [r for r in rows if r["kind"] == "step"]
first, last = steps_rows[0]["loss"], steps_rows[-1]["loss"]
speed = sum(r["samples_per_s"] for r in steps_rows[1:]) / max(1, len(steps_rows) - 1)
print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
print(f"recipe: {recipe_path}  steps: {steps}  batch: {recipe.train.batch_size}  wall: {wall:.1f} s")
print(f"samples/s: {speed:.0f}")
print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB")
print(f"loss: start {first:.4f}  end {last:.4f}")
if not last < first:
    sys.exit("gpu_check: FAILED, the loss did not fall")
print("gpu_check: OK")
PY
