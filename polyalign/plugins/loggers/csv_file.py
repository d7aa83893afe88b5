"""Logger ``csv``: ``metrics.csv`` in the run directory, a row per logged step and epoch."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from polyalign.core.errors import PolyalignError
from polyalign.core.hookspecs import hookimpl
from polyalign.files.atomic import atomic_write_text
from polyalign.files.run_files import logged_before

CSV_FILE = "metrics.csv"
KEY_COLUMNS = ["kind", "step", "epoch"]


class CsvLogger:
    """Writes ``<run_dir>/metrics.csv`` (the rows of ``metrics.jsonl`` as a table).

    A metric seen for the first time adds a column (the file is rewritten with the wider
    header); after a resume, rows past the resumed step and epoch are dropped.
    """

    def __init__(self, config: Any, run_dir: Path):
        self.path = Path(run_dir) / CSV_FILE
        self.columns: list[str] = []

    def _read(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        reader = csv.DictReader(io.StringIO(self.path.read_text(encoding="utf-8"), newline=""))
        try:
            self.columns = list(reader.fieldnames or [])
            return list(reader)
        except csv.Error as exc:
            raise PolyalignError(f"{self.path}, line {reader.line_num + 1}: not a CSV row ({exc}); remove that "
                                 f"line, then resume") from None

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, self.columns, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buf.getvalue())

    def _append(self, row: dict[str, Any]) -> None:
        if not self.columns:
            self._read()
        new = [k for k in row if k not in self.columns]
        if new or not self.path.exists():
            rows = self._read()
            base = self.columns or list(KEY_COLUMNS)
            self.columns = base + [k for k in row if k not in base]
            self._rewrite(rows + [row])
            return
        with open(self.path, "a", encoding="utf-8", newline="") as fh:
            csv.DictWriter(fh, self.columns, restval="", lineterminator="\n").writerow(row)

    @hookimpl
    def on_train_start(self, start_step: int, start_epoch: int) -> None:
        if self.path.exists():
            text = self.path.read_text(encoding="utf-8")
            if text and not text.endswith("\n"):  # a row torn by a kill mid-write: drop it
                atomic_write_text(self.path, text[: text.rfind("\n") + 1])
        rows = self._read()
        if not rows:
            return
        try:
            keep = [r for r in rows if logged_before(r, start_step, start_epoch)]
        except ValueError as exc:
            raise PolyalignError(f"{self.path}: {exc}; remove that row, then resume") from None
        self._rewrite(keep)

    @hookimpl
    def on_step_end(self, step: int, epoch: int, metrics: dict) -> None:
        self._append({"kind": "step", "step": step, "epoch": epoch, **metrics})

    @hookimpl
    def on_epoch_end(self, epoch: int, step: int, metrics: dict) -> None:
        self._append({"kind": "epoch", "step": step, "epoch": epoch, **metrics})
