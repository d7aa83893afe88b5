"""The training loop: set a run up, go through epochs, validate, checkpoint, resume, stop on a signal."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from polyalign.core.assemble import Assembled, assemble, build_model, with_rebuild_options
from polyalign.core.batch import Batch
from polyalign.core.data import skip_summary
from polyalign.core.device import check_precision, pick_device
from polyalign.core.errors import PolyalignError
from polyalign.core.loss import float_metrics
from polyalign.core.plugin_manager import Plugins
from polyalign.core.recipe import Recipe
from polyalign.core.stream import is_stream
from polyalign.files.run_files import CHECKPOINTS_DIR

from .auto_values import resolved_autos
from .console import PIPED_EVERY, epoch_line, step_line
from .distributed import DistInfo, barrier, cpu_group, max_across_ranks, mean_across_ranks
from .loaders import TrainingData
from .optim import build_optimizer
from .preemption import Stopped, StopSignals
from .presence import PresenceTally
from .state import TrainProgress, restore_state, save_state, seed_everything
from .step import NonFiniteError, Stepper, temperature_of
from .threads import auto_threads
from .window import StepRecord

if TYPE_CHECKING:  # imported with strategy: fsdp only (torch.distributed.checkpoint: ~0.9 s to import)
    from .sharding import ShardedParts

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
        check_precision(cfg.precision, self.device)
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
        self.threads = auto_threads(self.data.workers) if cfg.threads == "auto" else cfg.threads
        torch.set_num_threads(self.threads)
        self.autos = resolved_autos(recipe, self.loss_fn, self.device, self.data.workers)  # what each auto chose
        # recorded, so that a resumed run reads its stream the same way, and to say what was chosen
        self.recipe = recipe = recipe.model_copy(
            update={"train": cfg.model_copy(update={"num_workers": self.data.workers, "threads": self.threads})})
        self.batches_per_epoch = len(self.train_loader)
        if self.batches_per_epoch < cfg.accumulate:
            per_rank = f" per process (of {dist.world})" if dist.enabled else ""
            raise PolyalignError(
                f"train.accumulate: {cfg.accumulate} batches make one optimizer step, but an epoch of the train "
                f"split ({len(self.parts.dataset.split('train'))} rows) has only {self.batches_per_epoch} "
                f"batch(es) of "
                f"{self.rank_batch}{per_rank}: no optimizer step would ever run. Lower train.accumulate or "
                f"train.batch_size.")
        self.steps_per_epoch = max(1, self.batches_per_epoch // cfg.accumulate)
        total = self.steps_per_epoch * cfg.epochs
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps else total
        self.sharded: ShardedParts | None = None  # set by _forward_model with strategy: fsdp
        forward_model = self._forward_model()  # before the optimizer: sharding replaces the parameters
        optimizer, self.scheduler = build_optimizer(self.model, self.loss_fn, recipe, self.total_steps)
        self.optimizer = optimizer
        scaler = torch.amp.GradScaler(self.device.type) if cfg.precision == "fp16" else None
        self.stepper = Stepper(recipe, self.model, forward_model, self.loss_fn, optimizer,
                               self.scheduler, self.device, scaler)
        self.progress = TrainProgress()
        self.piped_at: float | None = None  # output to a log or pipe: when its last step line was printed
        self.pending: list[StepRecord] = []  # steps taken since the last check, not yet read back
        self.saved_step: int | None = None  # step of the newest checkpoint (for messages)
        self.stop_signals, self.stop_group = StopSignals(), cpu_group()
        if resume:
            restored = restore_state(
                self.run_dir / CHECKPOINTS_DIR,
                self.parts.load_state_dict if self.sharded is None else self.sharded.load_weights,
                optimizer.load_state_dict if self.sharded is None else partial(self.sharded.load_optimizer, optimizer),
                self.scheduler, scaler)
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
                      f"the start of epoch {progress.epoch + 2} (the rest of epoch {progress.epoch + 1} is not seen)")
            progress.next_epoch()

    @property
    def started(self) -> bool:
        """Whether the run has anything to keep: an optimizer step taken or a checkpoint written."""
        return self.progress.step > 0 or self.saved_step is not None

    def _forward_model(self) -> nn.Module:
        """The model as the steps call it: wrapped in DDP (or sharded with FSDP2) across processes,
        compiled when asked."""
        forward: nn.Module = self.model
        if self.dist.enabled and self.recipe.train.strategy == "fsdp":
            from .sharding import ShardedParts

            self.sharded = ShardedParts(self.model, self.loss_fn, self.device, self.dist.world)
        elif self.dist.enabled:  # an encoder goes unused when its modality is absent from a rank's batch
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
        """Checkpoint the current state as ``last`` (and ``best`` when asked); every process calls
        it, the main one writes."""
        self.saved_step = self.progress.step
        if self.sharded is not None:  # gathered from every process
            weights, optimizer_state = self.sharded.full_state(self.optimizer)
        elif self.dist.is_main:
            weights, optimizer_state = self.parts.state_dict(), self.optimizer.state_dict()
        if self.dist.is_main:
            save_state(self.run_dir / CHECKPOINTS_DIR, weights, optimizer_state, self.progress, self.scheduler,
                       self.recipe.train, best, self.stepper.scaler)

    def evaluation_parts(self) -> Assembled:
        """The trained parts as one process can use them: under FSDP an unsharded copy on the main
        process (every process must call it), else the parts themselves."""
        if self.sharded is None:
            return self.parts
        weights, _ = self.sharded.full_state(self.optimizer)
        if not self.dist.is_main:
            return self.parts  # sharded: not for evaluation
        recipe = with_rebuild_options(self.recipe, self.model, self.plugins)
        parts = Assembled(self.parts.dataset, build_model(recipe, self.plugins, root=self.parts.dataset.root),
                          self.parts.loss, self.parts.loss_name)
        parts.load_state_dict(weights)
        parts.model.to(self.device)
        return parts

    def _handle_nan(self, problem: str) -> None:
        """Count a skipped non-finite step (``on_nan: skip``, within the limit) or stop the run."""
        cfg, progress = self.recipe.train, self.progress
        if cfg.on_nan == "skip" and progress.nan_skips < cfg.max_nan_skips:
            progress.nan_skips += 1
            if self.dist.is_main:
                self.plugins.pm.hook.on_step_end(step=progress.step, epoch=progress.epoch + 1, run_dir=self.run_dir,
                                                 metrics={"nan_skipped": float(progress.nan_skips)})
            return
        kept = (f"the last good checkpoint ({self.run_dir / CHECKPOINTS_DIR / 'last'}, step {self.saved_step}) "
                f"is kept" if self.saved_step is not None else "no checkpoint had been written yet")
        limit = (f" ({progress.nan_skips} step(s) already skipped; train.max_nan_skips={cfg.max_nan_skips})"
                 if cfg.on_nan == "skip" else "")
        raise NonFiniteError(f"{problem}. Training stopped{limit}; {kept}. Lower train.lr, raise the "
                             f"temperature, check the data, or set train.on_nan=skip.")

    def _check(self, window: list[Batch] | None) -> StepRecord | None:
        """Read back the steps taken since the last check, all at once (training's only wait for
        the device): stop on, or skip and count, each non-finite step (its update was already
        skipped on the device) and number the good ones. ``window`` is the newest step's
        micro-batches. Returns the newest step's record when it was good, else None."""
        records, self.pending = self.pending, []
        values = torch.stack([torch.stack([r.loss.double(), r.grad_norm.to(r.loss.device).double()])
                              for r in records]).tolist()
        progress = self.progress
        progress.step -= len(records)
        good, dropped = False, 0
        for i, (record, (loss, norm)) in enumerate(zip(records, values)):
            good = not self.stepper.counts_as_bad(loss, norm)
            if good:
                progress.step += 1
                progress.epoch_loss += loss
                progress.epoch_steps += 1
                continue
            dropped += 1
            newest = i == len(records) - 1
            self._handle_nan(self.stepper.describe_bad_step(record, loss, norm, f"step {progress.step + 1}",
                                                            window if newest else None))
        if dropped:
            self.stepper.rewind_schedule(dropped)
        return records[-1] if good else None

    def _log_due(self) -> bool:
        step = self.progress.step
        return step % self.recipe.train.log_every == 0 or step == self.total_steps

    def _checkpoint_due(self) -> bool:
        every = self.recipe.train.checkpoint_every
        return bool(every) and self.progress.step % every == 0

    def _stop_if_asked(self, window: list[Batch] | None = None) -> None:
        """At an optimizer step, the same on every process: when any process got a stop signal, settle
        the steps taken, checkpoint them and end the run with :class:`Stopped`."""
        signum = max_across_ranks(self.stop_signals.signum or 0, self.stop_group)
        if not signum:
            return
        if self.pending:
            self._check(window)
        if self.saved_step != self.progress.step:
            self.save()
        barrier()  # every process knows the checkpoint is complete
        raise Stopped(self.run_dir, signum, self.progress.step, self.total_steps)

    def _log(self, record: StepRecord, elapsed: float, samples: int) -> dict[str, float]:
        """Send the newest step's loss and metrics (averaged over processes) to the loggers."""
        metrics = mean_across_ranks(float_metrics({"loss": record.loss, **record.metrics}))
        metrics.update({"lr": self.scheduler.get_last_lr()[0], "samples_per_s": samples / max(elapsed, 1e-9)})
        tau = temperature_of(self.loss_fn)
        if tau is not None:
            metrics["temperature"] = tau
        if self.dist.is_main:
            self.plugins.pm.hook.on_step_end(step=self.progress.step, epoch=self.progress.epoch + 1,
                                             metrics=metrics, run_dir=self.run_dir)
        return metrics

    @torch.no_grad()
    def validate(self) -> float | None:
        """Mean loss over the validation split."""
        if self.val_loader is None:
            return None
        self.model.eval()
        self.loss_fn.eval()
        total, n = torch.zeros((), dtype=torch.float64, device=self.device), 0
        where = f"validation after step {self.progress.step}"
        for batch in self.val_loader:
            batch = batch.to(self.device)
            total += self.stepper.validation_loss(batch, where).double() * len(batch)
            n += len(batch)
        self.model.train()
        self.loss_fn.train()
        return mean_across_ranks({"v": float(total) / max(n, 1)})["v"]

    def fit(self) -> dict[str, float]:
        """Train until ``epochs`` or ``max_steps``; returns the last epoch's metrics."""
        from rich import get_console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        cfg, progress = self.recipe.train, self.progress
        if progress.epoch >= cfg.epochs or progress.step >= self.total_steps:
            if self.dist.is_main:
                print(f"note: {self.run_dir} has finished training ({progress.epoch}/{cfg.epochs} epochs, "
                      f"{progress.step} steps): nothing to train; its evaluation runs again. To train it longer: "
                      f"polyalign train --resume {self.run_dir} train.epochs=N", flush=True)
            return {}
        if self.dist.is_main:
            self.plugins.pm.hook.on_train_start(run_dir=self.run_dir, recipe=self.recipe, model=self.model,
                                                loss=self.loss_fn, start_step=progress.step,
                                                start_epoch=progress.epoch)
        self.model.train()
        self.loss_fn.train()
        last: dict[str, float] = {}
        self.piped_at = time.monotonic() if self.dist.is_main and not get_console().is_terminal else None
        bar = Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(),
                       TextColumn("{task.completed}/{task.total} steps"),
                       TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]}"),
                       TimeRemainingColumn(), transient=False,
                       disable=not (self.dist.is_main and get_console().is_terminal))  # piped: epoch lines alone
        self.model.feature_inputs = frozenset(self.data.features)  # cached features in, heads only
        try:
            with self.stop_signals.noting(), bar:
                task = bar.add_task("train", total=self.total_steps, completed=progress.step,
                                    epoch=f"{progress.epoch + 1}/{cfg.epochs}", loss="-", speed="")
                while progress.epoch < cfg.epochs and progress.step < self.total_steps:
                    last = self._epoch(bar, task)
                    self._stop_if_asked()
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
        k = cfg.accumulate
        t0, samples = time.perf_counter(), 0
        window: list[Batch] = []
        tally = PresenceTally(list(self.recipe.modalities)) if progress.batch_in_epoch == 0 else None
        whole_run = progress.step == 0  # the tally sees every step of the run so far
        for batch in self.train_loader:
            if tally is not None:
                tally.add(batch)
            window.append(batch)
            progress.batch_in_epoch += 1
            if len(window) < k:
                continue
            self.pending.append(self.stepper.step(window))
            progress.step += 1
            samples += sum(len(b) for b in window) * self.dist.world
            epoch_ends = progress.batch_in_epoch + k > self.batches_per_epoch  # the rest cannot fill a window
            # checks read the device back: only at logs, checkpoints and epoch ends
            newest = self._check(window) if self._log_due() or self._checkpoint_due() or epoch_ends else None
            if newest is not None:  # else not checked now, or the newest step was skipped (steps renumbered)
                if self._log_due():
                    metrics = self._log(newest, time.perf_counter() - t0, samples)
                    bar.update(task, completed=progress.step, epoch=f"{progress.epoch + 1}/{cfg.epochs}",
                               loss=f"{metrics['loss']:.4f}",
                               speed=f"{metrics['samples_per_s']:.0f} samples/s")
                    if self.piped_at is not None and time.monotonic() - self.piped_at >= PIPED_EVERY:
                        self.piped_at = time.monotonic()  # no bar in a log: a line now and then instead
                        bar.console.print(step_line(progress.epoch + 1, cfg.epochs, progress.step, self.total_steps,
                                                    metrics["loss"], metrics["samples_per_s"]),
                                          markup=False, highlight=False, soft_wrap=True)
                    t0, samples = time.perf_counter(), 0
                if self._checkpoint_due():
                    self.save()
            if progress.step >= self.total_steps or epoch_ends:
                tally = tally if epoch_ends or whole_run else None  # max_steps cut the epoch after a resume
                break
            self._stop_if_asked(window)
            window = []
        if self.pending:  # the loader ended early: settle the steps taken since the last check
            self._check(None)
        if tally is not None:
            tally.check(self.recipe.data.plugin, progress.epoch)
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
            bar.console.print(epoch_line(progress.epoch, cfg.epochs, progress.step, self.total_steps, metrics),
                              markup=False, highlight=False, soft_wrap=True)
        is_best = val is not None and val < progress.best_val
        if is_best:
            progress.best_val = val
        self.save(best=is_best)
        return metrics
