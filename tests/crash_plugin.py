"""A plugin that crashes a run at a chosen point, for resume tests."""

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
