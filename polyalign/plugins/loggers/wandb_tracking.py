"""Logger ``wandb``: a Weights & Biases run, online or offline (``wandb sync`` uploads it later)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from polyalign.core.errors import PolyalignError
from polyalign.core.evaluator import eval_tag, row_columns
from polyalign.core.hookspecs import hookimpl
from polyalign.files.atomic import atomic_write_text
from polyalign.files.run_files import REPORT_DIR, read_tracker_run

from .tracker_failures import TrackerFailures

RUN_FILE = "wandb-run.json"  # in the run directory: the W&B run a resume continues


class WandbConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project: str = Field("polyalign", description="W&B project")
    entity: str | None = Field(None, description="W&B user or team (default: your default entity)")
    mode: Literal["online", "offline", "disabled"] | None = Field(
        None, description="default: the WANDB_MODE environment variable, else online")
    group: str | None = Field(None, description="group runs together in the W&B interface")
    tags: list[str] = Field(default_factory=list, description="tags of the W&B run")


class WandbLogger:
    """Logs ``train/*`` per logged step and ``epoch/*`` per epoch on the optimizer-step axis, the
    resolved recipe as the run config, the evaluator rows as a table plus ``eval/*`` values, and
    the evaluation plots as images. ``polyalign train --resume`` continues the same W&B run,
    rewound to the resumed step (``resume_from``), so no step is logged twice."""

    def __init__(self, config: WandbConfig, run_dir: Path):
        try:
            import wandb
        except ImportError as exc:
            raise PolyalignError(f"logger 'wandb' needs the wandb package ({exc}). Install it with "
                                 f"`pip install 'polyalign[wandb]'`, or remove wandb from the recipe's "
                                 f"logging list.") from None
        self.wandb, self.config, self.run_dir = wandb, config, Path(run_dir)
        self.run: Any = None
        self.step = 0
        self.failures = TrackerFailures("wandb")

    @hookimpl
    def on_train_start(self, recipe: Any, start_step: int) -> None:
        cfg, id_file = self.config, self.run_dir / RUN_FILE
        options: dict[str, Any] = {
            "project": cfg.project, "entity": cfg.entity, "mode": cfg.mode, "group": cfg.group,
            "tags": cfg.tags or None, "name": self.run_dir.name, "dir": str(self.run_dir),
            "config": recipe.model_dump(mode="json"), "reinit": "create_new"}
        if id_file.is_file():  # a resumed run: continue it from the checkpoint's step
            run_id = read_tracker_run(id_file, ("id",), "wandb")["id"]
            options["resume_from"] = f"{run_id}?_step={start_step}"
        try:
            self.run = self.wandb.init(**options)
        except Exception as exc:  # wandb's own errors: login, network, a bad project name
            raise PolyalignError(f"logger 'wandb' could not start a run: {type(exc).__name__}: {exc}. "
                                 f"Log in with `wandb login`, or set mode: offline in the recipe's logger "
                                 f"node (or WANDB_MODE=offline) and `wandb sync` later.") from None
        atomic_write_text(id_file, json.dumps({"id": self.run.id, "project": cfg.project}) + "\n")
        self.step = start_step

    def _log(self, data: dict[str, Any], step: int) -> None:
        if self.run is not None:
            self.step = step
            with self.failures.guard(f"step {step}"):
                self.run.log(data, step=step)

    @hookimpl
    def on_step_end(self, step: int, metrics: dict) -> None:
        self._log({f"train/{k}": float(v) for k, v in metrics.items()}, step)

    @hookimpl
    def on_epoch_end(self, epoch: int, step: int, metrics: dict) -> None:
        self._log({**{f"epoch/{k}": float(v) for k, v in metrics.items()}, "epoch/epoch": epoch}, step)

    @hookimpl
    def on_eval_end(self, rows: list, split: str) -> None:
        if self.run is None:
            return
        columns = row_columns(rows)
        data: dict[str, Any] = {eval_tag(r, split): float(r["value"]) for r in rows
                                if isinstance(r.get("value"), (int, float))}
        data[f"eval/{split}/rows"] = self.wandb.Table(
            columns=columns, data=[["+".join(r[c]) if c == "query" else r.get(c) for c in columns] for r in rows])
        for png in sorted((self.run_dir / REPORT_DIR).glob("*.png")):
            data[f"eval/{split}/{png.stem}"] = self.wandb.Image(str(png))
        self._log(data, self.step)

    @hookimpl
    def on_train_end(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None

    @hookimpl
    def on_train_error(self) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1)  # shown as failed; `polyalign train --resume` continues it
            self.run = None
