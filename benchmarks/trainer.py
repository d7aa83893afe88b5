"""Framework overhead: samples/s of ``polyalign.train`` against a minimal hand-written loop.

Both train the same model (encoders + heads built by polyalign), the same loss module and the
same XOR samples for the same number of steps, on this machine's CPU. The hand-written loop
holds the data as pre-stacked tensors and does nothing but forward, backward, clip, step.

    python benchmarks/trainer.py [--steps 300] [--hidden 256 256] [--batch 256]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

import polyalign
from polyalign.core.assemble import assemble
from polyalign.core.loss import clamp_temperatures
from polyalign.core.plugin_manager import make_plugins
from polyalign.training.optim import build_optimizer
from polyalign.training.state import seed_everything

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "xor-clip.yaml"
RESULTS = Path(__file__).resolve().parent / "results" / "trainer.json"


def overrides(steps: int, batch: int, hidden: list[int], n_train: int) -> list[str]:
    return [f"train.max_steps={steps}", f"train.batch_size={batch}", f"data.n_train={n_train}",
            "data.n_val=0", "data.n_test=256", "train.epochs=1000", "train.warmup_steps=10",
            "train.log_every=50", "model.embed_dim=128", "eval=[]",
            *[f"modalities.{m}.encoder.hidden={hidden}" for m in "abc"]]


class LoopClock:
    """Times the training loop: from ``on_train_start`` to the last step's ``on_step_end``
    (epoch-end checkpoints in between count; the final save and evaluation do not)."""

    def __init__(self, last_step: int):
        self.last_step = last_step
        self.start = self.end = 0.0

    @polyalign.hookimpl
    def on_train_start(self):
        self.start = time.perf_counter()

    @polyalign.hookimpl
    def on_step_end(self, step):
        if step == self.last_step:
            self.end = time.perf_counter()


def framework_run(recipe) -> float:
    """Seconds ``polyalign.train`` spends in its training loop."""
    clock = LoopClock(recipe.train.max_steps)
    plugins = make_plugins(extra=[clock])
    with tempfile.TemporaryDirectory() as tmp:
        polyalign.train(recipe, out=tmp, plugins=plugins)
    return clock.end - clock.start


def hand_written_run(recipe) -> float:
    """The same model, loss, data and optimisation in the shortest loop PyTorch allows."""
    seed_everything(recipe.seed)
    parts = assemble(recipe)
    model, loss_fn = parts.model, parts.loss
    samples = parts.dataset.split("train")
    data = {m: torch.stack([torch.as_tensor(s[m]) for s in samples]) for m in model.modalities}
    cfg = recipe.train
    opt, sched = build_optimizer(model, loss_fn, recipe, cfg.max_steps)
    n = len(samples)
    step = 0
    t0 = time.perf_counter()
    while step < cfg.max_steps:
        order = torch.randperm(n)
        for start in range(0, n - cfg.batch_size + 1, cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            emb = model({m: x[idx] for m, x in data.items()})
            loss = loss_fn(emb).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], cfg.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            clamp_temperatures(loss_fn)
            step += 1
            if step >= cfg.max_steps:
                break
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--hidden", type=int, nargs="*", default=[256, 256])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    recipe = polyalign.load_recipe(RECIPE, overrides(args.steps, args.batch, args.hidden, 100 * args.batch))
    framework_run(recipe)  # warm-up (imports, allocator)
    fw = min(framework_run(recipe) for _ in range(args.repeats))
    hw = min(hand_written_run(recipe) for _ in range(args.repeats))
    samples = args.steps * args.batch
    row = {"steps": args.steps, "batch": args.batch, "hidden": args.hidden,
           "polyalign_samples_per_s": samples / fw, "hand_written_samples_per_s": samples / hw,
           "overhead_pct": 100.0 * (fw - hw) / hw, "threads": torch.get_num_threads(),
           "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
           "torch": torch.__version__}
    print("| steps | batch | hidden | polyalign samples/s | hand-written samples/s | overhead |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.steps} | {args.batch} | {args.hidden} | {row['polyalign_samples_per_s']:.0f} | "
          f"{row['hand_written_samples_per_s']:.0f} | {row['overhead_pct']:+.1f}% |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
