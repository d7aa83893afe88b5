#!/usr/bin/env bash
# GPU check: train a recipe for a fixed number of steps on CUDA, once per setting (bf16 autocast,
# fp16 with its gradient scaler, window accumulation with grad checkpointing, and FSDP on two
# GPUs when there are two); print samples/s, peak GPU memory and the loss at start and end of
# each; exit non-zero if a setting fails or its loss did not fall. Then a preemption check (SIGTERM
# mid-epoch, --resume, weights equal to an uninterrupted run's). Then the peer benchmark
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
# Preemption on the GPU: SIGTERM mid-epoch stops at the next optimizer step with a checkpoint (exit 143);
# `--resume` must end with the weights of an uninterrupted run.
python - "$RECIPE" <<'PY'
import json, os, signal, subprocess, sys, tempfile, time
from pathlib import Path

import torch
from safetensors.torch import load_file

recipe = sys.argv[1]
over = ["train.device=cuda", "train.epochs=2", "train.log_every=1", "train.deterministic=true"]
site = Path(tempfile.mkdtemp())  # a plugin (entry point) that slows each step, so that the signal lands mid-epoch
(site / "polyalign_slow.py").write_text("import time\nimport polyalign\n\n@polyalign.hookimpl\n"
                                       "def on_step_end(step):\n    time.sleep(0.05)\n")
(site / "polyalign_slow-0.1.dist-info").mkdir()
(site / "polyalign_slow-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: polyalign-slow\n"
                                                                "Version: 0.1\n")
(site / "polyalign_slow-0.1.dist-info" / "entry_points.txt").write_text("[polyalign]\nslow = polyalign_slow\n")
env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
       "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def train(*args):
    return [sys.executable, "-m", "polyalign", "train", *args]


with tempfile.TemporaryDirectory() as tmp:
    full = subprocess.run(train(recipe, *over, "--out", f"{tmp}/full"), env=env, capture_output=True, text=True)
    if full.returncode:
        sys.exit(f"preemption check: the uninterrupted run FAILED\n{full.stderr[-2000:]}")
    (ref,) = Path(tmp, "full").iterdir()
    steps = max(json.loads(line).get("step", 0) for line in (ref / "metrics.jsonl").read_text().splitlines())
    proc = subprocess.Popen(train(recipe, *over, "--out", f"{tmp}/cut"), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    at = max(1, steps // 4)  # mid-epoch 1
    while proc.poll() is None:
        rows = list(Path(tmp, "cut").glob("*/metrics.jsonl"))
        if rows and any(json.loads(line).get("step", 0) >= at for line in rows[0].read_text().splitlines()
                        if line.strip().endswith("}")):
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.005)
    _, stderr = proc.communicate()
    if proc.returncode != 128 + signal.SIGTERM:
        sys.exit(f"preemption check: FAILED: exit {proc.returncode} (expected 143; the run may have finished "
                 f"before the signal: raise the recipe's steps)\n{stderr[-2000:]}")
    (run,) = Path(tmp, "cut").iterdir()
    resumed = subprocess.run(train("--resume", str(run)), env=env, capture_output=True, text=True)
    if resumed.returncode:
        sys.exit(f"preemption check: the resume FAILED\n{resumed.stderr[-2000:]}")
    a, b = (load_file(str(r / "checkpoints" / "last" / "model.safetensors")) for r in (ref, run))
    worst = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    print(f"\npreemption on {torch.cuda.get_device_name()}: SIGTERM after step {at} of {steps}, "
          f"{stderr.strip().splitlines()[-1][:200]}\n  resumed vs uninterrupted: largest weight difference {worst:g}")
    if worst != 0:
        sys.exit("preemption check: FAILED: the resumed run's weights differ from the uninterrupted run's")
    print("preemption check: OK")
PY
for precision in bf16 fp32; do
  echo
  echo "peer benchmark: polyalign vs open_clip_train on CUDA, $precision"
  # shellcheck disable=SC2086  # PEER_ARGS is a list of options
  python benchmarks/peer_open_clip.py --device cuda --precision "$precision" ${PEER_ARGS:-} \
    --out "benchmarks/results/peer_open_clip_cuda_$precision.json"
done
