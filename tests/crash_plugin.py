"""Plugins that crash or stop a run at a chosen point, for resume tests."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

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


def entry_point_env(tmp_path: Path, name: str, source: str) -> dict[str, str]:
    """Environment for a subprocess that loads ``source`` as the plugin module ``polyalign_<name>``
    through an entry point (installed in a folder put first on PYTHONPATH)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / f"polyalign_{name}.py").write_text(textwrap.dedent(source))
    info = site / f"polyalign_{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: polyalign-{name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[polyalign]\n{name} = polyalign_{name}\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
