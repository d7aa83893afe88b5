"""Plugins that crash or stop a run at a chosen point, for resume tests."""

from __future__ import annotations

import polyalign


class Crash(Exception):
    """Raised by :class:`CrashAtEndOfEpochTwo`."""


class CrashAtEndOfEpochTwo:
    """Raises after epoch 2 is logged but before its checkpoint: the last save is epoch 1's,
    so a resumed run redoes epoch 2."""

    @polyalign.hookimpl
    def on_epoch_end(self, epoch):
        if epoch == 2:
            raise Crash


class StopAtStep:
    """Interrupts a run (as Ctrl-C would) right after optimizer step ``step`` is logged."""

    def __init__(self, step: int):
        self.step = step

    @polyalign.hookimpl
    def on_step_end(self, step):
        if step == self.step:
            raise KeyboardInterrupt
