"""The trainer: AdamW, warmup + cosine, accumulation, AMP, logging, checkpoints, resume."""

from __future__ import annotations

import contextlib
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import checkpoint as ckpt
from .assemble import Assembled, assemble, with_rebuild_options
from .batch import Batch
from .data import EpochSampler, make_loader, skip_summary
from .distributed import (DistInfo, all_reduce_mean_grads, broadcast_path, finish_distributed, gather_batch,
                          init_distributed, mean_across_ranks)
from .errors import PluginError, PolyalignError
from .evaluate import run_evaluators, write_report
from .loss import LossOutput, Temperature, check_loss_output, clamp_temperatures
from .plugins import Plugins, default_plugins
from .recipe import Recipe, load_recipe
from .run_dir import RECIPE_FILE, new_run_dir, write_recipe

TIMING_KEYS = ("samples_per_s",)  # metrics that differ between identical runs


class NonFiniteError(PolyalignError):
    """The loss or a gradient became NaN/Inf."""


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise PolyalignError(f"train.device: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PolyalignError("train.device: 'cuda' was asked for but no CUDA device is available; "
                             "use device=auto or device=cpu")
    return device


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast for ``bf16`` (or ``auto`` on CUDA); nothing for fp32."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG state, as tensors and plain values (loadable with ``weights_only``)."""
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0], "python_gauss": random.getstate()[2],
             "numpy": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2]),
             "numpy_gauss": [int(np_state[3]), float(np_state[4])]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_gauss"][0], state["numpy_gauss"][1]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def lr_lambda(step: int, warmup: int, total: int, schedule: str) -> float:
    """Linear warmup, then cosine decay to zero (or constant)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def param_groups(modules: list[nn.Module], weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices; no decay for biases, norms, temperatures and missing-embeddings."""
    decay, no_decay = [], []
    for module in modules:
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            (decay if p.dim() >= 2 and "missing_embeddings" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def temperature_of(loss: nn.Module) -> float | None:
    """τ of the first :class:`Temperature` in the loss (for logging)."""
    for m in loss.modules():
        if isinstance(m, Temperature):
            return float(1.0 / m.scale.detach())
    return None


def drop_modalities(present: dict[str, torch.Tensor], rates: dict[str, float]) -> dict[str, torch.Tensor]:
    """Train-time modality dropout: mark each row of ``m`` absent with probability ``rates[m]``."""
    if not rates:
        return present
    out = dict(present)
    for m, rate in rates.items():
        if m in out and rate > 0:
            out[m] = out[m] & (torch.rand(out[m].shape[0]) >= rate).to(out[m].device)
    return out


class Trainer:
    """Runs one recipe: owns the parts, the optimiser, the loop and the run directory."""

    def __init__(self, recipe: Recipe, run_dir: Path, plugins: Plugins, dist: DistInfo,
                 resume: bool = False):
        self.recipe, self.run_dir, self.plugins, self.dist = recipe, run_dir, plugins, dist
        cfg = recipe.train
        self.device = pick_device(cfg.device)
        if self.device.type == "cuda" and dist.enabled:
            self.device = torch.device("cuda", dist.local_rank)
            torch.cuda.set_device(self.device)
        if cfg.deterministic and self.device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        seed_everything(recipe.seed)
        self.parts: Assembled = assemble(recipe, plugins)
        self.model = self.parts.model.to(self.device)
        self.loss_fn = self.parts.loss.to(self.device)
        self.forward_model: nn.Module = self.model
        if cfg.batch_size % dist.world:
            raise PolyalignError(f"train.batch_size: {cfg.batch_size} is the global batch and must divide "
                                 f"evenly over {dist.world} processes")
        self.rank_batch = cfg.batch_size // dist.world
        if self.dist.enabled:  # an encoder goes unused when its modality is absent from a rank's batch
            holes = any(rate > 0 for rate in recipe.missing.train_rate.values()) or any(
                s.get(m) is None for s in self.parts.dataset.split("train") for m in recipe.modalities)
            self.forward_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=holes)
        if cfg.compile:
            self.forward_model = torch.compile(self.forward_model)
        self.train_set = self.parts.tuples("train", recipe.data.plugin)
        self.val_set = self.parts.tuples("val", recipe.data.plugin)
        if len(self.train_set) == 0:
            raise PolyalignError(f"data: the {recipe.data.plugin!r} dataset's train split is empty")
        self.sampler = EpochSampler(len(self.train_set), recipe.seed, True, self.dist.rank,
                                    self.dist.world, drop_last=True)
        collator = self.parts.collator()
        pin = cfg.pin_memory and self.device.type == "cuda"
        self.train_loader = make_loader(self.train_set, collator, self.rank_batch, self.sampler,
                                        cfg.num_workers, pin, drop_last=len(self.sampler) >= self.rank_batch)
        self.val_loader = make_loader(self.val_set, collator, self.rank_batch,
                                      EpochSampler(len(self.val_set), 0, False, self.dist.rank, self.dist.world),
                                      cfg.num_workers, pin) if len(self.val_set) else None
        self.batches_per_epoch = len(self.train_loader)
        self.steps_per_epoch = max(1, self.batches_per_epoch // cfg.accumulate)
        total = self.steps_per_epoch * cfg.epochs
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps else total
        self.optimizer = torch.optim.AdamW(param_groups([self.model, self.loss_fn], cfg.weight_decay), lr=cfg.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_lambda(s, cfg.warmup_steps, self.total_steps, cfg.schedule))
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_val = math.inf
        self.nan_skips = 0
        self.saved_step: int | None = None  # step of the newest checkpoint (for messages)
        self.epoch_loss = 0.0  # sum of this epoch's step losses so far (part of the resumable state)
        self.epoch_steps = 0
        if resume:
            self._restore()

    # ----------------------------------------------------------------- state
    def _state(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
                "best_val": self.best_val, "nan_skips": self.nan_skips,
                "epoch_loss": self.epoch_loss, "epoch_steps": self.epoch_steps,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "rng": rng_state()}

    def save(self, best: bool = False) -> None:
        """Checkpoint the current state (main process only) as ``last`` (and ``best`` when asked).

        With ``checkpoint_every`` the state is first written as ``step-NNNNNNNN`` (the newest
        ``keep_last`` of them are kept) and ``best``/``last`` are hard-linked copies of it.
        ``last`` is always swapped in last, so a kill at any point resumes from a complete state.
        """
        self.saved_step = self.step
        if not self.dist.is_main:
            return
        cfg = self.recipe.train
        root = self.run_dir / "checkpoints"
        names = ([ckpt.step_checkpoint_name(self.step)] if cfg.checkpoint_every else []) + \
            (["best"] if best else []) + ["last"]
        ckpt.save_checkpoint(root / names[0], self.parts.state_dict(), self._state())
        for name in names[1:]:
            ckpt.link_checkpoint(root / names[0], root / name)
        if cfg.checkpoint_every:
            ckpt.prune_step_checkpoints(root, cfg.keep_last)

    def _restore(self) -> None:
        directory = ckpt.latest_checkpoint(self.run_dir / "checkpoints")
        if directory is None:
            return  # killed before its first checkpoint: the run starts over from step 0
        self.parts.load_state_dict(ckpt.load_weights(directory))
        state = ckpt.load_state(directory)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.step, self.epoch = int(state["step"]), int(state["epoch"])
            self.batch_in_epoch, self.best_val = int(state["batch_in_epoch"]), float(state["best_val"])
            self.nan_skips = int(state["nan_skips"])
            self.epoch_loss, self.epoch_steps = float(state["epoch_loss"]), int(state["epoch_steps"])
            set_rng_state(state["rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ckpt.CheckpointError(
                f"cannot resume from {directory / ckpt.STATE}: it does not hold this run's training state "
                f"({type(exc).__name__}: {exc}). Was it written by another polyalign version or for "
                f"another recipe?") from exc
        self.saved_step = self.step

    # ----------------------------------------------------------------- steps
    def compute_loss(self, batch: Batch, train: bool) -> LossOutput:
        """Embed a batch and apply the loss (on the global batch when distributed)."""
        present = drop_modalities(batch.present, self.recipe.missing.train_rate) if train else batch.present
        with autocast_for(self.recipe.train.precision, self.device):
            emb = self.forward_model(batch.inputs, present)
        emb = {m: z.float() for m, z in emb.items()}
        loss_present = self.model.loss_present(present)
        if self.recipe.train.gather == "global":
            emb, loss_present = gather_batch(emb, loss_present)
        out = check_loss_output(self.loss_fn(emb, loss_present), "+".join(n.plugin for n in self.recipe.losses))
        if train and torch.is_grad_enabled() and not out.loss.requires_grad:
            raise PluginError(f"loss plugin {'+'.join(n.plugin for n in self.recipe.losses)!r} returned a "
                                 f"loss that does not depend on the embeddings (no gradient): keep it a "
                                 f"tensor computed from them (no .item(), .detach() or torch.tensor(...))")
        if not torch.isfinite(out.loss):
            bad = [m for m, z in emb.items() if not torch.isfinite(z).all()]
            bad_in = [m for m, x in batch.inputs.items()
                      if any(t.is_floating_point() and not torch.isfinite(t).all()
                             for t in (x.values() if isinstance(x, dict) else [x]))]
            where = f"step {self.step + 1}" if train else f"validation after step {self.step}"
            raise NonFiniteError(
                f"{where}: the loss is {float(out.loss.detach())} (terms: "
                f"{ {k: round(float(v), 4) for k, v in out.metrics.items()} }); non-finite embeddings in: "
                f"{', '.join(bad) or 'none'}; non-finite input values in: {', '.join(bad_in) or 'none'}")
        return out

    def _nonfinite_grads(self) -> str:
        """Names of the parameters whose gradient holds NaN/Inf (with their modalities)."""
        named = [(f"model.{n}", p) for n, p in self.model.named_parameters()]
        named += [(f"loss.{n}", p) for n, p in self.loss_fn.named_parameters()]
        bad = [n for n, p in named if p.grad is not None and not torch.isfinite(p.grad).all()]
        mods = sorted({n.split(".")[2] for n in bad
                       if n.startswith(("model.encoders.", "model.heads.", "model.norms."))})
        shown = ", ".join(bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
        return f"{shown or 'none'} (modalities: {', '.join(mods) or 'none'})"

    def _optimizer_step(self, terms: dict[str, float]) -> bool:
        cfg = self.recipe.train
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        all_reduce_mean_grads(self.loss_fn)  # DDP averages only the model's gradients
        norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        if not torch.isfinite(norm):
            where = self._nonfinite_grads()
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteError(f"step {self.step + 1}: the gradient norm is {float(norm)} (loss terms: "
                                 f"{ {k: round(float(v), 4) for k, v in terms.items()} }); non-finite "
                                 f"gradients in: {where}")
        if cfg.grad_clip is not None:
            torch.nn.utils.clip_grads_with_norm_(params, cfg.grad_clip, norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        clamp_temperatures(self.loss_fn)
        return True

    def _handle_nan(self, exc: NonFiniteError) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        cfg = self.recipe.train
        if cfg.on_nan == "skip" and self.nan_skips < cfg.max_nan_skips:
            self.nan_skips += 1
            if self.dist.is_main:
                self.plugins.pm.hook.on_step_end(step=self.step, epoch=self.epoch, run_dir=self.run_dir,
                                                 metrics={"nan_skipped": float(self.nan_skips)})
            return
        kept = (f"the last good checkpoint ({self.run_dir / 'checkpoints' / 'last'}, step {self.saved_step}) "
                f"is kept" if self.saved_step is not None else "no checkpoint had been written yet")
        limit = (f" ({self.nan_skips} step(s) already skipped; train.max_nan_skips={cfg.max_nan_skips})"
                 if cfg.on_nan == "skip" else "")
        raise NonFiniteError(f"{exc}. Training stopped{limit}; {kept}. Lower train.lr, raise the "
                             f"temperature, check the data, or set train.on_nan=skip.") from None

    @torch.no_grad()
    def validate(self) -> float | None:
        """Mean loss over the validation split."""
        if self.val_loader is None:
            return None
        self.model.eval()
        self.loss_fn.eval()
        total, n = 0.0, 0
        for batch in self.val_loader:
            batch = batch.to(self.device)
            total += float(self.compute_loss(batch, train=False).loss) * len(batch)
            n += len(batch)
        self.model.train()
        self.loss_fn.train()
        return mean_across_ranks({"v": total / max(n, 1)})["v"]

    # ----------------------------------------------------------------- loop
    def fit(self) -> dict[str, float]:
        """Train until ``epochs`` or ``max_steps``; returns the last epoch's metrics."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        cfg = self.recipe.train
        hook = self.plugins.pm.hook
        if self.dist.is_main:
            hook.on_train_start(run_dir=self.run_dir, recipe=self.recipe, model=self.model,
                                loss=self.loss_fn, start_step=self.step, start_epoch=self.epoch)
        self.model.train()
        self.loss_fn.train()
        last: dict[str, float] = {}
        progress = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(),
                            TextColumn("{task.completed}/{task.total} steps"),
                            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]}"),
                            TimeRemainingColumn(), disable=not self.dist.is_main, transient=False)
        with progress:
            bar = progress.add_task("train", total=self.total_steps, completed=self.step,
                                    epoch=self.epoch, loss="-", speed="")
            while self.epoch < cfg.epochs and self.step < self.total_steps:
                last = self._epoch(progress, bar)
        return last

    def _epoch(self, progress: Any, bar: Any) -> dict[str, float]:
        cfg = self.recipe.train
        hook = self.plugins.pm.hook
        self.sampler.set_epoch(self.epoch, start=self.batch_in_epoch * self.rank_batch)
        self.train_loader.generator.manual_seed(self.recipe.seed * 100003 + self.epoch)
        micro = 0
        window_loss, window_n, t0, samples = 0.0, 0, time.perf_counter(), 0
        for batch in self.train_loader:
            batch = batch.to(self.device, non_blocking=True)
            try:
                out = self.compute_loss(batch, train=True)
                (out.loss / cfg.accumulate).backward()
            except NonFiniteError as exc:  # the whole accumulation window is dropped
                self._handle_nan(exc)
                self.batch_in_epoch += 1
                micro, window_loss, window_n = 0, 0.0, 0
                continue
            micro += 1
            self.batch_in_epoch += 1
            samples += len(batch) * self.dist.world
            window_loss += out.loss.detach()  # a tensor: no host-device sync until logging
            window_n += 1
            if micro < cfg.accumulate:
                continue
            micro = 0
            try:
                self._optimizer_step(out.metrics)
            except NonFiniteError as exc:
                self._handle_nan(exc)
                window_loss, window_n = 0.0, 0
                continue
            self.step += 1
            self.epoch_loss += float(window_loss) / window_n
            self.epoch_steps += 1
            if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                elapsed = time.perf_counter() - t0
                metrics = mean_across_ranks({"loss": float(window_loss) / window_n, **out.metrics})
                metrics.update({"lr": self.scheduler.get_last_lr()[0],
                                "samples_per_s": samples / max(elapsed, 1e-9)})
                tau = temperature_of(self.loss_fn)
                if tau is not None:
                    metrics["temperature"] = tau
                if self.dist.is_main:
                    hook.on_step_end(step=self.step, epoch=self.epoch, metrics=metrics, run_dir=self.run_dir)
                progress.update(bar, completed=self.step, epoch=self.epoch, loss=f"{metrics['loss']:.4f}",
                                speed=f"{metrics['samples_per_s']:.0f} samples/s")
                t0, samples = time.perf_counter(), 0
            window_loss, window_n = 0.0, 0
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                self.save()
            if self.step >= self.total_steps:
                break
        val = self.validate()
        metrics = {"train_loss": self.epoch_loss / max(self.epoch_steps, 1)}
        if val is not None:
            metrics["val_loss"] = val
        for name, data in (("train", self.train_set), ("val", self.val_set)):
            skipped = data.take_skipped()  # data.on_error=skip: report what was left out
            if skipped and self.dist.is_main:
                metrics[f"skipped_{name}"] = float(len(skipped))
                progress.console.print(skip_summary(name, skipped), style="yellow", markup=False, soft_wrap=True)
        self.epoch += 1
        self.batch_in_epoch, self.epoch_loss, self.epoch_steps = 0, 0.0, 0
        if self.dist.is_main:
            hook.on_epoch_end(epoch=self.epoch, step=self.step, metrics=metrics, run_dir=self.run_dir)
        is_best = val is not None and val < self.best_val
        if is_best:
            self.best_val = val
        self.save(best=is_best)
        return metrics



def train(recipe: Recipe | str | Path, out: str | Path | None = None, resume: str | Path | None = None,
          overrides: list[str] | None = None, plugins: Plugins | None = None) -> Path:
    """Train a recipe (or resume the run in ``resume``); evaluate it; return the run directory."""
    plugins = plugins or default_plugins()
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / RECIPE_FILE).is_file():
            raise PolyalignError(f"--resume {run_dir}: not a run directory (no {RECIPE_FILE})")
        recipe = load_recipe(run_dir / RECIPE_FILE, overrides, plugins)
    else:
        if not isinstance(recipe, Recipe):
            recipe = load_recipe(recipe, overrides, plugins)
    dist = init_distributed(pick_device(recipe.train.device).type)
    if resume is None:
        run_dir = broadcast_path(new_run_dir(Path(out) if out else Path("runs"), recipe)
                                 if dist.is_main else None)
    loggers = [plugins.build("logger", name, {"run_dir": run_dir}) for name in recipe.logging]
    for logger in loggers:
        plugins.pm.register(logger)
    try:
        trainer = Trainer(recipe, run_dir, plugins, dist, resume=resume is not None)
        if resume is None and trainer.dist.is_main:  # record inferred encoder options (load without data)
            write_recipe(run_dir, with_rebuild_options(recipe, trainer.model, plugins))
        metrics = trainer.fit()
        if trainer.dist.is_main:
            rows = run_evaluators(recipe, trainer.parts, plugins, trainer.device, split="test")
            write_report(run_dir, rows)
            plugins.pm.hook.on_eval_end(rows=rows, run_dir=run_dir, split="test")
            plugins.pm.hook.on_train_end(run_dir=run_dir, metrics=metrics)
        finish_distributed()
    finally:
        for logger in loggers:
            plugins.pm.unregister(logger)
    return run_dir
