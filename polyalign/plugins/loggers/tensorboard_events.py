"""Logger ``tensorboard``: event files under ``<run_dir>/tensorboard`` (``tensorboard --logdir runs/``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polyalign.plugin import PolyalignError, eval_tag, hookimpl

LOG_DIR = "tensorboard"


class TensorBoardLogger:
    """TensorBoard event files in <run>/tensorboard (needs `pip install tensorboard`); view with `tensorboard
    --logdir runs/`

    Scalars on the optimizer-step axis: ``train/*`` per logged step (loss, per-term losses,
    temperature, learning rate, throughput), ``epoch/*`` (train and validation loss) and
    ``eval/*`` (evaluator rows). After a resume, events past the resumed step are purged."""

    name = "tensorboard"
    requires = {"tensorboard": "polyalign[tensorboard]"}

    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise PolyalignError(
                f"logger 'tensorboard' needs the tensorboard package ({exc}). Install it with "
                f"`pip install tensorboard` (or `pip install 'polyalign[tensorboard]'`), or remove "
                f"tensorboard from the recipe's logging list.") from None
        self._writer_class = SummaryWriter
        self.log_dir = Path(run_dir) / LOG_DIR
        self._writer: Any = None
        self._step = 0

    def writer(self, purge_step: int | None = None) -> Any:
        """The event writer (created on first use)."""
        if self._writer is None:
            self._writer = self._writer_class(str(self.log_dir), purge_step=purge_step)
        return self._writer

    @hookimpl
    def on_train_start(self, start_step: int) -> None:
        self._step = start_step
        self.writer(purge_step=start_step + 1 if start_step > 0 else None)

    @hookimpl
    def on_step_end(self, step: int, metrics: dict) -> None:
        self._step = step
        for key, value in metrics.items():
            self.writer().add_scalar(f"train/{key}", float(value), step)

    @hookimpl
    def on_epoch_end(self, epoch: int, step: int, metrics: dict) -> None:
        self._step = step
        writer = self.writer()
        for key, value in metrics.items():
            writer.add_scalar(f"epoch/{key}", float(value), step)
        writer.add_scalar("epoch/epoch", float(epoch), step)
        writer.flush()

    @hookimpl
    def on_eval_end(self, rows: list, split: str) -> None:
        writer = self.writer()
        for row in rows:
            if isinstance(row.get("value"), (int, float)):
                writer.add_scalar(eval_tag(row, split), float(row["value"]), self._step)
        writer.flush()

    @hookimpl
    def on_train_end(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
