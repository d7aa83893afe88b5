"""What training prints besides its progress bar: one line per epoch, the same in a terminal and in a log."""

from __future__ import annotations


def epoch_line(epoch: int, epochs: int, step: int, total_steps: int, metrics: dict[str, float]) -> str:
    """'epoch 3/20 (step 117/780): train_loss 2.3456, val_loss 2.4567', epochs counted from 1 as in metrics.jsonl."""
    values = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) and not k.startswith("skipped_") else f"{k} {v:g}"
                       for k, v in metrics.items())
    return f"epoch {epoch}/{epochs} (step {step}/{total_steps}): {values}"


PIPED_EVERY = 10.0
"""Seconds between two step lines when the output is no terminal (a log file, a pipe), where the bar is off."""


def step_line(epoch: int, epochs: int, step: int, total_steps: int, loss: float, samples_per_s: float) -> str:
    """'step 117/780 (epoch 3/20): loss 2.3456, 512 samples/s': the bar's figures as one line for a log."""
    return f"step {step}/{total_steps} (epoch {epoch}/{epochs}): loss {loss:.4f}, {samples_per_s:.0f} samples/s"
