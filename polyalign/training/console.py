"""What training prints besides its progress bar: one line per epoch, the same in a terminal and in a log."""

from __future__ import annotations


def epoch_line(epoch: int, epochs: int, step: int, total_steps: int, metrics: dict[str, float]) -> str:
    """'epoch 3/20 (step 117/780): train_loss 2.3456, val_loss 2.4567', epochs counted from 1 as in metrics.jsonl."""
    values = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) and not k.startswith("skipped_") else f"{k} {v:g}"
                       for k, v in metrics.items())
    return f"epoch {epoch}/{epochs} (step {step}/{total_steps}): {values}"
