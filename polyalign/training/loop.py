"""The training loop: set a run up, go through epochs, validate, checkpoint, resume."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from polyalign.core.assemble import Assembled, assemble
from polyalign.core.data import skip_summary
from polyalign.core.device import pick_device
from polyalign.core.errors import PolyalignError
from polyalign.core.plugins import Plugins
from polyalign.core.recipe import Recipe
from polyalign.core.run_files import CHECKPOINTS_DIR
from polyalign.core.stream import is_stream

from .distributed import DistInfo, mean_across_ranks
from .loaders import TrainingData
from .optim import build_optimizer
from .state import TrainProgress, restore_state, save_state, seed_everything
from .step import NonFiniteError, Stepper, temperature_of

TIMING_KEYS = ("samples_per_s",)  # metrics that differ between identical runs


class Trainer:
    """Runs one recipe: owns the parts, the data loaders, the loop and the run directory."""

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
        if cfg.batch_size % dist.world:
            raise PolyalignError(f"train.batch_size: {cfg.batch_size} is the global batch and must divide "
                                 f"evenly over {dist.world} processes")
        self.rank_batch = cfg.batch_size // dist.world
        self.data = TrainingData(recipe, self.parts, dist, self.device, show_progress=dist.is_main)
        self.train_loader, self.val_loader = self.data.train, self.data.val
        if cfg.num_workers == "auto":  # recorded, so that a resumed run reads its stream the same way
            self.recipe = recipe = recipe.model_copy(
                update={"train": cfg.model_copy(update={"num_workers": self.data.workers})})
        self.batches_per_epoch = len(self.train_loader)
        if self.batches_per_epoch < cfg.accumulate:
            per_rank = f" per process (of {dist.world})" if dist.enabled else ""
            raise PolyalignError(
                f"train.accumulate: {cfg.accumulate} batches make one optimizer step, but an epoch of the train "
                f"split ({len(self.parts.dataset.split('train'))} rows) has only {self.batches_per_epoch} batch(es) of "
                f"{self.rank_batch}{per_rank}: no optimizer step would ever run. Lower train.accumulate or "
                f"train.batch_size.")
        self.steps_per_epoch = max(1, self.batches_per_epoch // cfg.accumulate)
        total = self.steps_per_epoch * cfg.epochs
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps else total
        optimizer, self.scheduler = build_optimizer(self.model, self.loss_fn, recipe, self.total_steps)
        self.optimizer = optimizer
        self.stepper = Stepper(recipe, self.model, self._forward_model(), self.loss_fn, optimizer,
                               self.scheduler, self.device)
        self.progress = TrainProgress()
        self.saved_step: int | None = None  # step of the newest checkpoint (for messages)
        if resume:
            restored = restore_state(self.run_dir / CHECKPOINTS_DIR, self.parts, self.optimizer, self.scheduler)
            if restored is not None:  # else killed before its first checkpoint: start over from step 0
                self.progress, self.saved_step = restored, restored.step
                self._check_layout()
        self.progress.data_layout = self.data.layout

    def _check_layout(self) -> None:
        """A streamed epoch continues mid-way only with the layout it was cut with; else go on
        from the start of the next epoch."""
        progress = self.progress
        if progress.batch_in_epoch and progress.data_layout != self.data.layout:
            if self.dist.is_main:
                print(f"note: the checkpoint was written mid-epoch with {progress.data_layout or '?'} "
                      f"(processes x DataLoader workers) reading the shards, this run has {self.data.layout}; "
                      f"a streamed epoch cannot be continued with another layout, so training goes on from "
                      f"the start of epoch {progress.epoch + 1} (the rest of epoch {progress.epoch} is not seen)")
            progress.next_epoch()

    @property
    def started(self) -> bool:
        """Whether the run has anything to keep: an optimizer step taken or a checkpoint written."""
        return self.progress.step > 0 or self.saved_step is not None

    def _forward_model(self) -> nn.Module:
        """The model as the steps call it: wrapped in DDP across processes, compiled when asked."""
        forward: nn.Module = self.model
        if self.dist.enabled:  # an encoder goes unused when its modality is absent from a rank's batch
            train = self.parts.dataset.split("train")
            holes = any(rate > 0 for rate in self.recipe.missing.train_rate.values()) or is_stream(train) or any(
                s.get(m) is None for s in train for m in self.recipe.modalities)
            forward = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=holes)
        if self.recipe.train.compile:
            forward = torch.compile(forward)
        return forward

    def save(self, best: bool = False) -> None:
        """Checkpoint the current state (main process only) as ``last`` (and ``best`` when asked)."""
        self.saved_step = self.progress.step
        if self.dist.is_main:
            save_state(self.run_dir / CHECKPOINTS_DIR, self.parts, self.progress, self.optimizer,
                       self.scheduler, self.recipe.train, best)

    def _handle_nan(self, exc: NonFiniteError) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        cfg, progress = self.recipe.train, self.progress
        if cfg.on_nan == "skip" and progress.nan_skips < cfg.max_nan_skips:
            progress.nan_skips += 1
            if self.dist.is_main:
                self.plugins.pm.hook.on_step_end(step=progress.step, epoch=progress.epoch, run_dir=self.run_dir,
                                                 metrics={"nan_skipped": float(progress.nan_skips)})
            return
        kept = (f"the last good checkpoint ({self.run_dir / CHECKPOINTS_DIR / 'last'}, step {self.saved_step}) "
                f"is kept" if self.saved_step is not None else "no checkpoint had been written yet")
        limit = (f" ({progress.nan_skips} step(s) already skipped; train.max_nan_skips={cfg.max_nan_skips})"
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
        where = f"validation after step {self.progress.step}"
        for batch in self.val_loader:
            batch = batch.to(self.device)
            total += float(self.stepper.loss(batch, train=False, where=where).loss) * len(batch)
            n += len(batch)
        self.model.train()
        self.loss_fn.train()
        return mean_across_ranks({"v": total / max(n, 1)})["v"]

    def fit(self) -> dict[str, float]:
        """Train until ``epochs`` or ``max_steps``; returns the last epoch's metrics."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        cfg, progress = self.recipe.train, self.progress
        if self.dist.is_main:
            self.plugins.pm.hook.on_train_start(run_dir=self.run_dir, recipe=self.recipe, model=self.model,
                                                loss=self.loss_fn, start_step=progress.step,
                                                start_epoch=progress.epoch)
        self.model.train()
        self.loss_fn.train()
        last: dict[str, float] = {}
        bar = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(),
                       TextColumn("{task.completed}/{task.total} steps"),
                       TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]}"),
                       TimeRemainingColumn(), disable=not self.dist.is_main, transient=False)
        self.model.feature_inputs = frozenset(self.data.features)  # cached features in, heads only
        try:
            with bar:
                task = bar.add_task("train", total=self.total_steps, completed=progress.step,
                                    epoch=progress.epoch, loss="-", speed="")
                while progress.epoch < cfg.epochs and progress.step < self.total_steps:
                    last = self._epoch(bar, task)
        finally:
            self.model.feature_inputs = frozenset()
            self.data.close()
            self.train_loader = self.val_loader = None
        return last

    def _epoch(self, bar: Any, task: Any) -> dict[str, float]:
        cfg, progress = self.recipe.train, self.progress
        hook = self.plugins.pm.hook
        self.train_loader.set_epoch(progress.epoch, progress.batch_in_epoch,
                                    seed=self.recipe.seed * 100003 + progress.epoch)
        micro = 0
        window_loss, window_n, t0, samples = 0.0, 0, time.perf_counter(), 0
        for batch in self.train_loader:
            batch = batch.to(self.device, non_blocking=True)
            try:
                out = self.stepper.loss(batch, train=True, where=f"step {progress.step + 1}")
                (out.loss / cfg.accumulate).backward()
            except NonFiniteError as exc:  # the whole accumulation window is dropped
                self._handle_nan(exc)
                progress.batch_in_epoch += 1
                micro, window_loss, window_n = 0, 0.0, 0
                continue
            micro += 1
            progress.batch_in_epoch += 1
            samples += len(batch) * self.dist.world
            window_loss += out.loss.detach()  # a tensor: no host-device sync until logging
            window_n += 1
            if micro < cfg.accumulate:
                continue
            micro = 0
            try:
                self.stepper.update(out.metrics, where=f"step {progress.step + 1}")
            except NonFiniteError as exc:
                self._handle_nan(exc)
                window_loss, window_n = 0.0, 0
                continue
            progress.step += 1
            progress.epoch_loss += float(window_loss) / window_n
            progress.epoch_steps += 1
            if progress.step % cfg.log_every == 0 or progress.step == self.total_steps:
                elapsed = time.perf_counter() - t0
                metrics = mean_across_ranks({"loss": float(window_loss) / window_n, **out.metrics})
                metrics.update({"lr": self.scheduler.get_last_lr()[0],
                                "samples_per_s": samples / max(elapsed, 1e-9)})
                tau = temperature_of(self.loss_fn)
                if tau is not None:
                    metrics["temperature"] = tau
                if self.dist.is_main:
                    hook.on_step_end(step=progress.step, epoch=progress.epoch, metrics=metrics,
                                     run_dir=self.run_dir)
                bar.update(task, completed=progress.step, epoch=progress.epoch, loss=f"{metrics['loss']:.4f}",
                           speed=f"{metrics['samples_per_s']:.0f} samples/s")
                t0, samples = time.perf_counter(), 0
            window_loss, window_n = 0.0, 0
            if cfg.checkpoint_every and progress.step % cfg.checkpoint_every == 0:
                self.save()
            if progress.step >= self.total_steps:
                break
        val = self.validate()
        metrics = {"train_loss": progress.epoch_loss / max(progress.epoch_steps, 1)}
        if val is not None:
            metrics["val_loss"] = val
        for name, skipped in self.data.take_skipped().items():  # data.on_error=skip: report what was left out
            if skipped and self.dist.is_main:
                metrics[f"skipped_{name}"] = float(len(skipped))
                bar.console.print(skip_summary(name, skipped), style="yellow", markup=False, soft_wrap=True)
        progress.next_epoch()
        if self.dist.is_main:
            hook.on_epoch_end(epoch=progress.epoch, step=progress.step, metrics=metrics, run_dir=self.run_dir)
        is_best = val is not None and val < progress.best_val
        if is_best:
            progress.best_val = val
        self.save(best=is_best)
        return metrics
