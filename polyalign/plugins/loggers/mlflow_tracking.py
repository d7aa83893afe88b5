"""Logger ``mlflow``: an MLflow run in a tracking store (a local SQLite file, or a server)."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from polyalign.core.errors import PolyalignError
from polyalign.core.evaluator import eval_tag, row_columns
from polyalign.core.hookspecs import hookimpl
from polyalign.files.atomic import atomic_write_text
from polyalign.files.run_files import REPORT_DIR, read_tracker_run

from .tracker_failures import TrackerFailures

RUN_FILE = "mlflow-run.json"  # in the run directory: the MLflow run a resume continues
PARAM_VALUE_LIMIT = 6000  # MLflow's longest parameter value
BATCH = 100  # MLflow's most parameters per log_batch call
PROBE_SECONDS = 5.0  # how long a tracking server may take to answer before the run is refused


class MlflowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tracking_uri: str | None = Field(None, description="e.g. sqlite:///mlflow.db or http://host:5000; default: "
                                                       "MLFLOW_TRACKING_URI, else MLflow's own default")
    experiment: str = Field("polyalign", description="experiment name (created when missing)")
    artifact_location: str | None = Field(None, description="where a new experiment keeps files (plots, recipe); "
                                                            "default: mlartifacts beside a SQLite database")
    tags: dict[str, str] = Field(default_factory=dict, description="extra tags on the run")


def metric_key(name: str) -> str:
    """``name`` with the characters MLflow refuses in metric names (``+`` ...) made readable or ``_``."""
    return re.sub(r"[^/\w.\- :]", "_", name.replace("+", " and "))


def flat_params(node: Any, prefix: str = "") -> dict[str, str]:
    """A nested recipe as ``{"train.lr": "0.01", ...}`` (lists as JSON), cut to MLflow's limits."""
    if isinstance(node, dict) and node:
        out: dict[str, str] = {}
        for key, value in node.items():
            out.update(flat_params(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    text = node if isinstance(node, str) else json.dumps(node)
    return {metric_key(prefix)[:250]: text if len(text) <= PARAM_VALUE_LIMIT else text[: PARAM_VALUE_LIMIT - 1] + "…"}


def default_artifacts(tracking_uri: str) -> str | None:
    """``mlartifacts`` beside a ``sqlite:///`` database file (else None: MLflow's default)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return str((Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts").resolve())


def check_reachable(uri: str) -> None:
    """One request, of at most ``PROBE_SECONDS``, to an HTTP(S) tracking server before anything is logged:
    MLflow's own client retries an unreachable server for minutes."""
    if not uri.startswith(("http://", "https://")):
        return
    seconds = PROBE_SECONDS
    import urllib.error
    import urllib.request

    failed: list[BaseException] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=seconds).close()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            failed.append(exc)

    thread = threading.Thread(target=probe, name="mlflow-probe", daemon=True)
    thread.start()
    while thread.is_alive():  # in slices: a Ctrl-C that the kernel hands to another thread is still seen at once
        thread.join(0.1)
    exc = failed[0] if failed else None
    if exc is None or isinstance(exc, urllib.error.HTTPError):
        return  # it answered (a proxy or an older server may not know /health)
    if isinstance(exc, (OSError, ValueError)):  # URLError, a refused connection, a timeout, a malformed URI
        raise PolyalignError(f"logger 'mlflow': the tracking server {uri} cannot be reached "
                             f"({getattr(exc, 'reason', exc)}; waited at most {seconds:.0f} s). Start it, give "
                             f"another tracking_uri, or remove mlflow from the recipe's logging list.") from None
    raise exc


class MlflowLogger:
    """Logs ``train/*`` per logged step and ``epoch/*`` per epoch at the optimizer step, the resolved
    recipe as parameters (and ``recipe.yaml``), the evaluator rows as metrics and a table, and the
    evaluation plots as files. ``polyalign train --resume`` continues the same MLflow run. MLflow
    cannot delete logged values, so a resumed run logs only the (metric, step) pairs the run does
    not hold yet: each step appears once, and the steps between the checkpoint and the interruption
    keep the values first logged (the same values, when training is deterministic)."""

    def __init__(self, config: MlflowConfig, run_dir: Path):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # polyalign sends nothing anywhere
        try:
            from mlflow.entities import Metric, Param, RunStatus
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise PolyalignError(f"logger 'mlflow' needs the mlflow package ({exc}). Install it with "
                                 f"`pip install 'polyalign[mlflow]'`, or remove mlflow from the recipe's "
                                 f"logging list.") from None
        self._client_class, self._metric, self._param, self._status = MlflowClient, Metric, Param, RunStatus
        self.config, self.run_dir = config, Path(run_dir)
        self.client: Any = None
        self.run_id = ""
        self.logged: set[tuple[str, int]] = set()  # (metric, step) pairs the run already holds
        self.step = 0
        self.failures = TrackerFailures("mlflow")

    def _start(self, recipe: Any) -> None:
        id_file = self.run_dir / RUN_FILE
        if id_file.is_file():  # a resumed run: the same store and run
            saved = read_tracker_run(id_file, ("tracking_uri", "run_id"), "mlflow")
            check_reachable(saved["tracking_uri"])
            self.client, self.run_id = self._client_class(tracking_uri=saved["tracking_uri"]), saved["run_id"]
            run = self.client.get_run(self.run_id)
            self.logged = {(key, m.step) for key in run.data.metrics
                           for m in self.client.get_metric_history(self.run_id, key)}
            self.client.update_run(self.run_id, status="RUNNING")
            params = set(run.data.params)
        else:
            cfg = self.config
            client = self._client_class(tracking_uri=cfg.tracking_uri)
            uri = client.tracking_uri
            check_reachable(uri)
            self.client = client
            experiment = self.client.get_experiment_by_name(cfg.experiment)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
                cfg.experiment, artifact_location=cfg.artifact_location or default_artifacts(uri))
            tags = {"polyalign.run_dir": str(self.run_dir.resolve()), "polyalign.recipe": recipe.name,
                    "polyalign.loss": "+".join(n.plugin for n in recipe.losses), **cfg.tags}
            self.run_id = self.client.create_run(experiment_id, run_name=self.run_dir.name, tags=tags).info.run_id
            atomic_write_text(id_file, json.dumps({"tracking_uri": uri, "run_id": self.run_id}) + "\n")
            params = set()
        new = [self._param(k, v) for k, v in flat_params(recipe.model_dump(mode="json")).items() if k not in params]
        for start in range(0, len(new), BATCH):
            self.client.log_batch(self.run_id, params=new[start: start + BATCH])
        self.client.log_text(self.run_id, recipe.to_yaml(), "recipe.yaml")

    @hookimpl
    def on_train_start(self, recipe: Any, start_step: int) -> None:
        self.step = start_step
        try:
            self._start(recipe)
        except PolyalignError:
            raise
        except Exception as exc:  # MLflow's own errors: an unreachable server, a bad URI, a locked database
            store = self.config.tracking_uri or "the default tracking store (MLFLOW_TRACKING_URI)"
            raise PolyalignError(f"logger 'mlflow' could not start a run in {store}: "
                                 f"{type(exc).__name__}: {exc}") from None

    def _log(self, values: dict[str, float], step: int) -> None:
        if self.client is None:
            return
        self.step = step
        now = int(time.time() * 1000)
        metrics = [self._metric(metric_key(k), float(v), now, step) for k, v in values.items()
                   if (metric_key(k), step) not in self.logged]
        if metrics:
            with self.failures.guard(f"step {step}"):
                self.client.log_batch(self.run_id, metrics=metrics)
                self.logged.update((m.key, step) for m in metrics)

    @hookimpl
    def on_step_end(self, step: int, metrics: dict) -> None:
        self._log({f"train/{k}": v for k, v in metrics.items()}, step)

    @hookimpl
    def on_epoch_end(self, epoch: int, step: int, metrics: dict) -> None:
        self._log({**{f"epoch/{k}": v for k, v in metrics.items()}, "epoch/epoch": epoch}, step)

    @hookimpl
    def on_eval_end(self, rows: list, split: str) -> None:
        if self.client is None:
            return
        self._log({eval_tag(r, split): r["value"] for r in rows if isinstance(r.get("value"), (int, float))},
                  self.step)
        columns = row_columns(rows)
        table = {c: ["+".join(r[c]) if c == "query" else r.get(c) for r in rows] for c in columns}
        with self.failures.guard(f"the {split} evaluation"):
            self.client.log_table(self.run_id, table, f"eval/{split}_rows.json")
            for png in sorted((self.run_dir / REPORT_DIR).glob("*.png")):
                self.client.log_artifact(self.run_id, str(png), f"eval/{split}")

    def _finish(self, status: int) -> None:
        if self.client is not None and self.run_id:  # a run was started in the store
            with self.failures.guard("the end of the run"):
                self.client.set_terminated(self.run_id, self._status.to_string(status))
            self.client = None

    @hookimpl
    def on_train_end(self) -> None:
        self._finish(self._status.FINISHED)

    @hookimpl
    def on_train_error(self) -> None:
        self._finish(self._status.FAILED)  # `polyalign train --resume` sets it running again
