"""`polyalign serve` under decode bombs (issue 31, item 2): uploads whose headers say they decode to more than
the per-request budget are refused (413) before anything is decoded, so a real server taking such requests at
its full body limit from several clients at once still answers another client's one-value /embed within 2 s,
and its memory stays within the bound docs/serving.md states."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import pytest
from conftest import RECIPES
from test_serve_options import free_port
from test_serving import TINY

import polyalign
from polyalign.core.encoder import FileBytes
from polyalign.inference.export import export_model
from polyalign.serving.values import RequestError, check_decode_budget, decoded_numbers

RSS_BOUND_MB = 1024  # docs/serving.md: bombs at the body limit add at most this to the idle server's memory


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int, height: int, padding: int = 0) -> bytes:
    """A valid RGB PNG of zeros (a few hundred KB that decode to width x height x 3 bytes), with ``padding``
    bytes of an ancillary chunk every reader skips."""
    pixels = zlib.compress(b"\0" * (height * (1 + 3 * width)), 9)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _chunk(b"prVt", b"\1" * padding) * (padding > 0) + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b""))


def test_the_budget_is_read_from_headers_and_named_in_the_413():
    bomb = FileBytes("upload b.png", png_bomb(6000, 6000))  # 36 million pixels: under the encoder's max_pixels
    assert len(bomb.data) < 200_000 and decoded_numbers(bomb) == 6000 * 6000 * 3
    check_decode_budget({"image": [bomb]}, 200)  # 108 million numbers: within a budget of 200
    with pytest.raises(RequestError) as refused:
        check_decode_budget({"image": [bomb, bomb], "text": ["a red circle"]}, 200)
    assert refused.value.status == 413
    assert ("decode to 216.0 million numbers" in str(refused.value) and "'image' value 1 (upload b.png): 108.0 "
            "million" in str(refused.value) and "--max-decoded-millions" in str(refused.value))
    assert decoded_numbers(FileBytes("upload b.png", b"\x89PNG not really")) == 0  # the encoder names it


def _multipart(parts: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = "polyalign-bomb-boundary"
    body = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                    f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
                    for name, filename, data in parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _post(url: str, body: bytes, kind: str, timeout: float = 60) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": kind})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@pytest.mark.slow
def test_a_server_under_decode_bombs_at_the_body_limit_answers_another_client_within_2_s(tmp_path):
    run = polyalign.train(RECIPES / "demo-multimodal.yaml", out=tmp_path / "runs",
                          overrides=TINY + [f"data.path={tmp_path / 'data'}"])
    export = export_model(run, tmp_path / "export")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "polyalign", "serve", str(export), "--port", str(port),
                               "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    one = json.dumps({"values": {"text": ["a red circle"]}}).encode()
    try:
        deadline = time.monotonic() + 120
        while server.poll() is None and time.monotonic() < deadline:
            try:
                if _post(f"{base}/embed", one, "application/json", timeout=5) == 200:  # warm: the model has run
                    break
            except OSError:
                time.sleep(0.2)
        assert server.poll() is None, server.communicate()[1].decode()[-2000:]
        idle_kb = _memory_kb(server.pid, "VmRSS")

        # 64 bombs of 36 million pixels each (under max_pixels), padded to fill the 16 MB body limit
        bomb = png_bomb(6000, 6000, padding=155_000)
        body, kind = _multipart([("image", f"b{i}.png", bomb) for i in range(64)])
        assert 15.0 < len(body) / 2**20 <= 16.0
        bombed: list[int] = []
        stop = threading.Event()

        def bomber() -> None:
            while not stop.is_set():
                bombed.append(_post(f"{base}/embed", body, kind))

        bombers = [threading.Thread(target=bomber) for _ in range(4)]
        for b in bombers:
            b.start()
        waits = []
        try:
            time.sleep(1.0)  # the bombs are arriving
            for _ in range(5):
                started = time.monotonic()
                assert _post(f"{base}/embed", one, "application/json", timeout=30) == 200
                waits.append(time.monotonic() - started)
                time.sleep(0.3)
        finally:
            stop.set()
            for b in bombers:
                b.join(timeout=120)
        peak_kb = _memory_kb(server.pid, "VmHWM")
    finally:
        server.terminate()
        server.communicate(timeout=30)
    assert len(bombed) >= 4 and set(bombed) == {413}, bombed
    assert max(waits) < 2.0, waits
    assert (peak_kb - idle_kb) / 1024 < RSS_BOUND_MB, (idle_kb, peak_kb)
    print(f"bombs answered: {len(bombed)}; one-value /embed waits: {[round(w, 3) for w in waits]} s; "
          f"RSS idle {idle_kb / 1024:.0f} MB, peak {peak_kb / 1024:.0f} MB")
