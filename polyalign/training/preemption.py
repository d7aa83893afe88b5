"""Stopping on the signals a cluster sends before it ends a job (SIGTERM, and SIGUSR1/SIGUSR2 from
Slurm's ``--signal``): the signal is only noted; every process stops at the next optimizer step, rank 0
writes a checkpoint, and the run ends with :class:`Stopped`. A second signal during the save is noted too,
so it cannot cut the write short. Ctrl-C (SIGINT) is not one of them: it interrupts at once, as always."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from polyalign.core.errors import PolyalignError

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1", "SIGUSR2") if hasattr(signal, name))


class Stopped(PolyalignError):
    """The run stopped on a signal after writing its checkpoint; ``signum`` is the signal."""

    def __init__(self, run_dir: Path, signum: int, step: int, total: int):
        self.run_dir, self.signum, self.step = Path(run_dir), signum, step
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step} of {total}; the checkpoint "
                         f"{self.run_dir / 'checkpoints' / 'last'} holds it. Continue the run with: "
                         f"polyalign train --resume {self.run_dir}")


class StopSignals:
    """Notes the first stop signal received while :meth:`noting` is active."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def _note(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum = signum

    @contextmanager
    def noting(self) -> Iterator[None]:
        """Note stop signals (instead of their previous handlers) for the ``with`` block; a no-op off the
        main thread, where Python cannot install signal handlers."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self._note) for s in STOP_SIGNALS}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
