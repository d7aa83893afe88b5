"""`polyalign serve`: every numeric option is ranged where it is parsed, and SIGTERM stops the server in seconds."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from conftest import RECIPES

import polyalign
from polyalign.cli import main


@pytest.mark.parametrize("option, value, said", [
    ("--batch-wait-ms", "nan", "must be a number at least 0 and at most 1000, got 'nan'"),
    ("--batch-wait-ms", "-1", "at least 0"),
    ("--batch-wait-ms", "inf", "at most 1000"),
    ("--max-body-mb", "nan", "must be a number above 0 and at most 4096, got 'nan'"),
    ("--max-body-mb", "0", "above 0"),
    ("--max-body-mb", "-1", "above 0"),
    ("--max-body-mb", "inf", "at most 4096"),
    ("--max-decoded-millions", "0", "above 0"),
    ("--max-decoded-millions", "nan", "must be a number above 0 and at most 100000, got 'nan'"),
    ("--port", "70000", "must be at most 65535, got 70000"),
    ("--port", "-1", "must be at least 0"),
])
def test_serve_refuses_out_of_range_options_at_once(option, value, said, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["serve", "no-such-run", option, value])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: " in err and said in err and "Traceback" not in err


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url: str, body: dict | None = None, timeout: float = 30) -> int:
    """The HTTP status of a GET (or of a JSON POST with ``body``)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture(scope="module")
def xor_run(tmp_path_factory):
    """A small trained XOR model's run directory."""
    return polyalign.train(RECIPES / "xor-symile.yaml", out=tmp_path_factory.mktemp("serve") / "runs",
                           overrides=["train.epochs=1", "data.n_train=256", "data.n_val=64", "data.n_test=64",
                                      "eval=[]"])


@pytest.mark.slow
def test_sigterm_stops_the_server_within_seconds_with_a_request_in_flight(xor_run):
    run = xor_run
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "POLYALIGN_SERVE_TOKEN"}
    server = subprocess.Popen([sys.executable, "-m", "polyalign", "serve", str(run), "--port", str(port),
                               "--batch-wait-ms", "1000"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if get(f"{base}/health", timeout=2) == 200:
                    break
            except OSError:
                time.sleep(0.2)
        assert server.poll() is None, server.communicate()[1].decode()[-2000:]
        statuses: list[int | str] = []

        def embed() -> None:
            try:
                statuses.append(get(f"{base}/embed", {"values": {"a": [[1, 0, 1, 0, 1]]}}))
            except OSError as exc:  # the connection closed by the stopping server
                statuses.append(type(exc).__name__)

        client = threading.Thread(target=embed)
        client.start()
        time.sleep(0.3)  # the request now waits in its batch (1 s)
        started = time.monotonic()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=15)
        stopped_in = time.monotonic() - started
        client.join(timeout=15)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert stopped_in < 10, f"the server took {stopped_in:.1f} s to stop after SIGTERM"
    assert statuses, "the request in flight never finished"
    assert "Traceback" not in server.stderr.read().decode()


@pytest.mark.slow
def test_a_client_that_leaves_mid_body_leaves_no_traceback_in_the_log(xor_run, caplog):
    import uvicorn

    from polyalign.serving.app import create_app
    from polyalign.serving.candidates import load_candidates

    model = polyalign.load(xor_run, device="cpu")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(model, load_candidates(model, [], [])), log_config=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        for _ in range(3):
            with socket.create_connection(sock.getsockname(), timeout=5) as client:
                client.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 1000\r\n\r\n{\"values\": {\"a\"")
            time.sleep(0.3)
        port = sock.getsockname()[1]
        assert get(f"http://127.0.0.1:{port}/health") == 200  # still serving
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
    logged = "\n".join(r.getMessage() + (str(r.exc_info) if r.exc_info else "") for r in caplog.records)
    assert "Exception in ASGI application" not in logged and not any(r.exc_info for r in caplog.records), logged


@pytest.mark.slow
def test_a_lone_surrogate_in_a_json_body_is_a_400_that_says_so(xor_run):
    from fastapi.testclient import TestClient

    from polyalign.serving.app import create_app
    from polyalign.serving.candidates import load_candidates

    model = polyalign.load(xor_run, device="cpu")
    with TestClient(create_app(model, load_candidates(model, [], []))) as client:
        answer = client.post("/embed", content=b'{"values": {"a": ["\\ud800"]}}',
                             headers={"Content-Type": "application/json"})
    assert answer.status_code == 400  # a malformed body, as any JSON that cannot be read
    assert "half of a UTF-16 surrogate pair alone" in answer.json()["detail"]
