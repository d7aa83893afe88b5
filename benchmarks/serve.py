"""Load test of ``polyalign serve``: requests/s and latency at concurrency 1, 8 and 32, memory, errors.

Servers run as ``polyalign serve`` subprocesses on 127.0.0.1 (never another host); the client is
one asyncio process holding ``concurrency`` keep-alive connections, each sending its next request
as soon as the last is answered. Three workloads:

- ``embed vector``: ``POST /embed`` of one small vector (5 numbers) to an export of ``xor-clip``;
- ``embed text``: ``POST /embed`` of one short text to the demo export (image + text + audio + ECG);
- ``search``: ``POST /search`` of a text query for the top 5 of the demo's 200 test images
  (exact ranking with the CLIP score, the candidates embedded at start).

Each (workload, concurrency) runs ``--requests`` requests or ``--seconds`` seconds, whichever ends
first, in ``--rounds`` interleaved rounds; the table gives medians over rounds. The demo server's
resident memory is read before and after ``--memory-requests`` more requests (embed and search,
concurrency 8). Beside it, the same embedding done in-process (``polyalign.load(...).embed`` of one
value per call, and of 32 values per call, on as many torch threads as the server's model) gives the
service's overhead as a ratio. The whole run
stops by itself (every level is bounded, and ``--budget`` seconds bound the run).

    python benchmarks/serve.py                          # writes benchmarks/results/serve.json
    python benchmarks/serve.py --requests 300 --rounds 1 --memory-requests 1000   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import polyalign
from polyalign.inference.export import export_model
from polyalign.serving.server import default_threads

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "serve.json"
HOST = "127.0.0.1"  # the load test never leaves this machine
CONCURRENCY = (1, 8, 32)
TEXT = "a red circle"
VECTOR = [1.0, 0.0, 1.0, 1.0, 0.0]


def make_exports(folder: Path) -> tuple[Path, Path, Path]:
    """The demo model (its recipe's architecture, trained one short epoch: speed, not quality, is
    measured) and an xor-clip model, exported; and the demo data folder."""
    data = folder / "data"
    demo = polyalign.train(ROOT / "polyalign" / "recipes" / "demo-multimodal.yaml", out=folder / "runs",
                           overrides=["data.n_train=64", "data.n_val=16", "data.n_test=200", "train.epochs=1",
                                      "eval=[]", f"data.path={data}"])
    xor = polyalign.train(ROOT / "polyalign" / "recipes" / "xor-clip.yaml", out=folder / "runs",
                          overrides=["data.n_train=512", "data.n_val=64", "data.n_test=64", "train.epochs=1",
                                     "eval=[]"])
    return export_model(demo, folder / "demo"), export_model(xor, folder / "xor"), data


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    """``polyalign serve`` in a subprocess on a free local port, stopped on exit."""

    def __init__(self, export: Path, *options: str):
        self.port = free_port()
        command = [sys.executable, "-m", "polyalign", "serve", str(export), "--host", HOST, "--port", str(self.port),
                   "--device", "cpu", *options]
        env = {k: v for k, v in os.environ.items() if k != "POLYALIGN_SERVE_TOKEN"}
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start in 120 s")

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def rss_mb(self) -> float:
        """The server's resident memory."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")


def request_bytes(port: int, path: str, body: dict) -> bytes:
    data = json.dumps(body).encode()
    return (f"POST {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n").encode() + data


async def one_connection(port: int, requests: list[bytes], stop_at: float, counter: list[int], limit: int,
                         latencies: list[float], errors: list[str]) -> None:
    """Send requests on one keep-alive connection until ``limit`` are sent in all or time is up."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        while counter[0] < limit and time.perf_counter() < stop_at:
            payload = requests[counter[0] % len(requests)]
            counter[0] += 1
            start = time.perf_counter()
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            if status != 200:
                errors.append(f"{status}: {body[:200].decode(errors='replace')}")
    finally:
        writer.close()


async def load(port: int, requests: list[bytes], concurrency: int, limit: int, seconds: float) -> dict:
    """Requests/s, latency percentiles and errors of ``limit`` requests (or ``seconds``) at ``concurrency``."""
    latencies: list[float] = []
    errors: list[str] = []
    counter = [0]
    start = time.perf_counter()
    await asyncio.gather(*(one_connection(port, requests, start + seconds, counter, limit, latencies, errors)
                           for _ in range(concurrency)))
    wall = time.perf_counter() - start
    ordered = sorted(latencies)
    return {"requests": len(latencies), "seconds": wall, "rps": len(latencies) / wall,
            "p50_ms": 1000 * ordered[len(ordered) // 2], "p99_ms": 1000 * ordered[min(len(ordered) - 1,
                                                                                   int(0.99 * len(ordered)))],
            "errors": len(errors), "first_error": errors[0] if errors else None}


def in_process(export: Path, values: dict, calls: int) -> dict:
    """Values/s of ``polyalign.load(...).embed`` in this process: one value per call, and 32 per call."""
    torch.set_num_threads(default_threads(1))  # as many as the server's model runs on
    model = polyalign.load(export, device="cpu")
    for _ in range(20):
        model.embed(values)
    start = time.perf_counter()
    for _ in range(calls):
        model.embed(values)
    one = calls / (time.perf_counter() - start)
    batch = {m: v * 32 for m, v in values.items()}
    start = time.perf_counter()
    for _ in range(max(1, calls // 32)):
        model.embed(batch)
    thirty_two = 32 * max(1, calls // 32) / (time.perf_counter() - start)
    return {"one_per_call_values_per_s": one, "32_per_call_values_per_s": thirty_two}


def table(report: dict) -> str:
    header = ("| workload | concurrency | requests/s | p50 ms | p99 ms | errors | x concurrency 1 | "
              "/ in-process 1 per call |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report["rows"]:
        lines.append(f"| {row['workload']} | {row['concurrency']} | {row['rps']:.0f} | {row['p50_ms']:.1f} | "
                     f"{row['p99_ms']:.1f} | {row['errors']} | {row['speedup']:.1f} | "
                     f"{row['vs_in_process']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per level and round (default 2000)")
    parser.add_argument("--seconds", type=float, default=15.0, help="at most this long per level and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--memory-requests", type=int, default=10000)
    parser.add_argument("--budget", type=float, default=1200.0, help="stop starting levels after this many seconds")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    began, load_at_start = time.monotonic(), os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        demo, xor, data = make_exports(Path(tmp))
        workloads = {"embed vector": (xor, "/embed", {"values": {"a": [VECTOR]}}),
                     "embed text": (demo, "/embed", {"values": {"text": [TEXT]}}),
                     "search": (demo, "/search", {"query": {"text": TEXT}, "target": "image", "k": 5})}
        baseline = {"embed vector": in_process(xor, {"a": [VECTOR]}, 2000),
                    "embed text": in_process(demo, {"text": [TEXT]}, 500)}
        runs: dict[tuple[str, int], list[dict]] = {}
        memory: dict = {}
        with Server(xor) as xor_server, Server(demo, "--candidates", f"image={data / 'test.jsonl'}") as demo_server:
            ports = {xor: xor_server.port, demo: demo_server.port}
            for name, (export, path, body) in workloads.items():  # warm-up: first requests load lazily
                asyncio.run(load(ports[export], [request_bytes(ports[export], path, body)], 8, 300, 10))
            for _ in range(args.rounds):
                for concurrency in CONCURRENCY:
                    for name, (export, path, body) in workloads.items():
                        if time.monotonic() - began > args.budget:
                            break
                        payload = [request_bytes(ports[export], path, body)]
                        result = asyncio.run(load(ports[export], payload, concurrency, args.requests, args.seconds))
                        runs.setdefault((name, concurrency), []).append(result)
                        print(name, concurrency, {k: round(v, 2) if isinstance(v, float) else v
                                                  for k, v in result.items()}, flush=True)
            mixed = [request_bytes(demo_server.port, path, body) for _, path, body in
                     (workloads["embed text"], workloads["search"])]
            memory["before_mb"] = demo_server.rss_mb()
            memory["run"] = asyncio.run(load(demo_server.port, mixed, 8, args.memory_requests, 600))
            memory["after_mb"] = demo_server.rss_mb()
            memory["requests"] = memory["run"]["requests"]
    rows = []
    for (name, concurrency), results in runs.items():
        row = {"workload": name, "concurrency": concurrency, "rounds": len(results),
               **{k: statistics.median(r[k] for r in results) for k in ("rps", "p50_ms", "p99_ms")},
               "errors": sum(r["errors"] for r in results), "requests": sum(r["requests"] for r in results),
               "first_error": next((r["first_error"] for r in results if r["first_error"]), None)}
        rows.append(row)
    for row in rows:
        first = next(r for r in rows if r["workload"] == row["workload"] and r["concurrency"] == 1)
        row["speedup"] = row["rps"] / first["rps"]
        base = baseline.get(row["workload"], baseline["embed text"])
        row["vs_in_process"] = row["rps"] / base["one_per_call_values_per_s"]
    report = {"rounds": args.rounds, "requests_per_level": args.requests, "seconds_per_level": args.seconds,
              "in_process": baseline, "memory": memory, "rows": rows, "machine": {
                  "cpu": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                               if line.startswith("model name")), platform.processor()),
                  "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                  "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg()},
              "seconds": time.monotonic() - began}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"memory: {memory['before_mb']:.0f} MB before, {memory['after_mb']:.0f} MB after "
          f"{memory['requests']} more requests ({memory['run']['errors']} errors)")
    print(f"in-process: {json.dumps(baseline)}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
