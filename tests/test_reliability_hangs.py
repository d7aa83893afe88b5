"""Hangs (issue 22, class 2): an unreachable MLflow server, a tracker failing mid-run, a resampled source whose
shards read as empty. Each case runs under an alarm: a hang fails the test instead of stalling the suite."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import sqlite3
import tarfile
import threading
import warnings
from pathlib import Path
from typing import Iterator

import pytest
from conftest import ROOT, TINY_XOR

from polyalign.cli import main

XOR = ROOT / "polyalign" / "recipes" / "xor-clip.yaml"


class Hang(BaseException):
    """The command did not answer within its bound (not an Exception: no library's retry loop swallows it)."""


@contextlib.contextmanager
def within(seconds: int) -> Iterator[None]:
    """Fail with :class:`Hang` when the block runs longer than ``seconds``."""
    def alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _errors(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "unexpected" not in err, err
    return err


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


def _mlflow(uri: str) -> list[str]:
    pytest.importorskip("mlflow")
    return [*TINY_XOR, f"logging=[jsonl, {{plugin: mlflow, tracking_uri: '{uri}'}}]"]


# --------------------------------------------------------------------------- trackers
def test_an_unreachable_tracking_server_is_refused_at_once_leaving_no_run(tmp_path, capsys, closed_port):
    with within(60):
        code = main(["train", str(XOR), *_mlflow(f"http://127.0.0.1:{closed_port}"), "--out", str(tmp_path)])
    assert code == 2
    err = _errors(capsys)
    assert f"the tracking server http://127.0.0.1:{closed_port} cannot be reached" in err
    assert list(tmp_path.iterdir()) == []  # no half run directory


def test_a_silent_tracking_server_gets_one_bounded_check(tmp_path, capsys, silent_server, monkeypatch):
    from polyalign.plugins.loggers import mlflow_tracking

    monkeypatch.setattr(mlflow_tracking, "PROBE_SECONDS", 1.0)
    with within(60):
        code = main(["train", str(XOR), *_mlflow(f"http://127.0.0.1:{silent_server}"), "--out", str(tmp_path)])
    assert code == 2 and "waited at most 1 s" in _errors(capsys)
    assert list(tmp_path.iterdir()) == []


def _ctrl_c_to_the_process() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def _ctrl_c_to_this_thread() -> None:  # the kernel may hand a process's SIGINT to any of its threads
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)


@pytest.fixture
def terminal_ctrl_c() -> Iterator[None]:
    """Python's own Ctrl-C handler, as in a terminal: a shell that starts the tests in the background
    (``cmd &``) hands them SIGINT ignored, and Python then keeps it ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("send", [_ctrl_c_to_the_process, _ctrl_c_to_this_thread])
def test_ctrl_c_while_waiting_for_the_tracking_server_stops_at_once(tmp_path, capsys, silent_server, monkeypatch,
                                                                     terminal_ctrl_c, send):
    from polyalign.plugins.loggers import mlflow_tracking

    monkeypatch.setattr(mlflow_tracking, "PROBE_SECONDS", 300.0)
    real = mlflow_tracking.check_reachable

    def interrupted_while_waiting(uri):
        threading.Timer(0.5, send).start()
        return real(uri)

    monkeypatch.setattr(mlflow_tracking, "check_reachable", interrupted_while_waiting)
    with within(60):
        code = main(["train", str(XOR), *_mlflow(f"http://127.0.0.1:{silent_server}"), "--out", str(tmp_path)])
    assert code == 130 and "interrupted" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_tracker_failing_mid_run_warns_once_and_training_goes_on(tmp_path):
    pytest.importorskip("mlflow")
    from polyalign.plugins.loggers.mlflow_tracking import MlflowConfig, MlflowLogger
    from polyalign.plugins.loggers.wandb_tracking import WandbConfig, WandbLogger

    class LockedStore:
        calls = 0

        def __getattr__(self, name):
            def fails(*a, **k):
                LockedStore.calls += 1
                raise sqlite3.OperationalError("database is locked")
            return fails

    mlflow_logger = MlflowLogger(MlflowConfig(), tmp_path)
    mlflow_logger.client, mlflow_logger.run_id = LockedStore(), "r"
    loggers = [mlflow_logger]
    with contextlib.suppress(ImportError):
        wandb_logger = WandbLogger(WandbConfig(), tmp_path)
        wandb_logger.run = LockedStore()
        loggers.append(wandb_logger)
    for logger in loggers:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for step in (1, 2, 3):
                logger.on_step_end(step=step, metrics={"loss": 1.0})
            logger.on_epoch_end(epoch=0, step=3, metrics={"train_loss": 1.0})
        assert len(caught) == 1 and "database is locked" in str(caught[0].message)
        assert "training goes on" in str(caught[0].message)
    assert mlflow_logger.failures.count == 4
    mlflow_logger.on_eval_end(rows=[], split="test")
    mlflow_logger.on_train_end()


# --------------------------------------------------------------------------- resampled sources that read as empty
def _shards(folder: Path, members_in_a_folder: bool) -> Path:
    folder.mkdir()
    with tarfile.open(folder / "train-000000.tar", "w") as tar:
        if members_in_a_folder:
            for i in range(4):
                for ext, data in (("a.json", b"[1.0, 2.0]"), ("b.json", b"[3.0, 1.0]")):
                    info = tarfile.TarInfo(f"__x__/{i:08d}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    if not members_in_a_folder:
        (folder / "sizes.json").write_text(json.dumps({"train-000000.tar": 8}))  # a lie: the tar is empty
    return folder


@pytest.mark.parametrize("members_in_a_folder", [True, False], ids=["members-in-a-folder", "sizes-file-lies"])
def test_a_resampled_source_that_reads_as_empty_is_an_error_naming_it(tmp_path, capsys, members_in_a_folder):
    shards = _shards(tmp_path / "shards", members_in_a_folder)
    overrides = [f"data={{plugin: webdataset, train: '{shards}/train-000000.tar', resampled: true, "
                 f"modalities: {{a: a.json, b: b.json}}}}",
                 "modalities={a: {encoder: {plugin: vector, dim: 2}}, b: {encoder: {plugin: vector, dim: 2}}}",
                 "loss={plugin: clip}", "eval=[]", "train.batch_size=2", "train.max_steps=3", "train.num_workers=0",
                 "logging=[]"]
    with within(60):
        code = main(["train", str(XOR), *overrides, "--out", str(tmp_path / "runs")])
    assert code == 2
    err = _errors(capsys)
    assert "source 0 of the stream" in err and "train-000000.tar" in err
    assert ("has no samples" if members_in_a_folder else "gives none") in err  # counted as empty, or read so
