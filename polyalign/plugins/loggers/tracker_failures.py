"""A remote tracker (MLflow, W&B) that fails mid-run: training goes on, with one warning per logger.

The run's own files (``metrics.jsonl``, the checkpoints, ``eval/``) hold every value whatever the
tracker does, so a tracking server that goes away or a locked tracking database is not a reason to
stop a run; starting one is checked before the first step instead (an unreachable server is an error).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Iterator


class TrackerFailures:
    """Catches a tracker's errors while logging; warns at the first, counts the rest."""

    def __init__(self, logger: str):
        self.logger = logger
        self.count = 0

    @contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Run the block; a failure of the tracker is counted (and warned about the first time), not raised."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - a tracker's own errors (network, database) must not stop training
            self.count += 1
            if self.count == 1:
                warnings.warn(f"logger {self.logger!r} could not log {what} ({type(exc).__name__}: "
                              f"{str(exc)[:300]}); training goes on, the run's own files keep every value, and "
                              f"later failures of this logger are not reported", stacklevel=3)
