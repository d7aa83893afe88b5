"""Logger ``jsonl``: one JSON object per logged step and epoch in ``metrics.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from polyalign.core.errors import PolyalignError
from polyalign.core.hookspecs import hookimpl
from polyalign.files.atomic import RESUME, atomic_write_text, describe_os_error
from polyalign.files.json_file import JsonError, parse_json
from polyalign.files.run_files import METRICS_FILE, logged_before


class JsonlLogger:
    """Appends to ``<run_dir>/metrics.jsonl``; after a resume, drops rows past the resumed step."""

    def __init__(self, config: Any, run_dir: Path):
        self.path = Path(run_dir) / METRICS_FILE

    def _append(self, row: dict[str, Any]) -> None:
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
        except OSError as exc:
            raise PolyalignError(f"could not append to {self.path}: {describe_os_error(exc, RESUME)}; the rows past "
                                 f"the last checkpoint are rewritten on resume") from None

    @hookimpl
    def on_train_start(self, start_step: int, start_epoch: int) -> None:
        if not self.path.exists():
            return
        keep = []
        for n, line in enumerate(self.path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            try:
                row = parse_json(line, f"{self.path}, line {n}")
            except JsonError:  # a row torn by a kill mid-write; the resumed run logs it again
                continue
            try:
                if logged_before(row, start_step, start_epoch):
                    keep.append(json.dumps(row))
            except ValueError as exc:
                raise PolyalignError(f"{self.path}, line {n}: {exc}; remove that line, then resume") from None
        atomic_write_text(self.path, "".join(line + "\n" for line in keep))

    @hookimpl
    def on_step_end(self, step: int, epoch: int, metrics: dict) -> None:
        self._append({"kind": "step", "step": step, "epoch": epoch, **metrics})

    @hookimpl
    def on_epoch_end(self, epoch: int, step: int, metrics: dict) -> None:
        self._append({"kind": "epoch", "step": step, "epoch": epoch, **metrics})
