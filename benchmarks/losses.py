"""Forward+backward time and peak memory of every loss plugin, beside the reference implementations.

    python benchmarks/losses.py                      # batches 256..2048, M = 2, 3, 4, d = 128
    python benchmarks/losses.py --batches 256 512 --modalities 3
    python benchmarks/losses.py --matmul-rate        # the machine's matmul rate and Symile's floor

Each configuration runs in its own subprocess on the same inputs (seed 0, L2-normalised
float32 embeddings of width d, τ = 0.07): one warm-up on a small batch through the same code
path, then one measured forward+backward whose peak memory is the rise of the process's peak
resident set size (``VmHWM``, reset through ``/proc/self/clear_refs`` just before) above the
resident size with the inputs allocated, then more timed repeats while the total stays short;
the time is the median.
Configurations whose estimated memory or time exceed the limits are skipped and say why.
Prints a Markdown table and writes ``benchmarks/results/losses.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "losses.json"

# variant -> (implementation, loss plugin or reference, plugin config, modality counts it runs at)
VARIANTS: dict[str, tuple[str, str, dict, tuple[int, ...]]] = {
    "symile n_squared": ("polyalign", "symile", {"negatives": "n_squared"}, (2, 3, 4)),
    "symile n_squared (PyPI symile)": ("reference", "symile", {}, (3, 4)),
    "symile n": ("polyalign", "symile", {"negatives": "n"}, (3, 4)),
    "clip": ("polyalign", "clip", {}, (2, 3, 4)),
    "clip chunk_size=256": ("polyalign", "clip", {"chunk_size": 256}, (2, 3, 4)),
    "ClipLoss (open_clip)": ("reference", "open_clip", {}, (2,)),
    "gram": ("polyalign", "gram", {}, (3, 4)),
    "gram chunk_size=256": ("polyalign", "gram", {"chunk_size": 256}, (3, 4)),
    "mv_infonce": ("polyalign", "mv_infonce", {}, (3, 4)),
    "mv_infonce chunk_size=256": ("polyalign", "mv_infonce", {"chunk_size": 256}, (3, 4)),
    "mv_dhel": ("polyalign", "mv_dhel", {}, (3, 4)),
    "siglip": ("polyalign", "siglip", {}, (3, 4)),
    "siglip chunk_size=256": ("polyalign", "siglip", {"chunk_size": 256}, (3, 4)),
    "dcl": ("polyalign", "dcl", {}, (3, 4)),
    "dcl negatives=cross_modal": ("polyalign", "dcl", {"negatives": "cross_modal"}, (3, 4)),
    "dclw": ("polyalign", "dclw", {}, (3, 4)),
    "align_uniform": ("polyalign", "align_uniform", {}, (3, 4)),
}


def estimate(variant: str, n: int, m: int, d: int) -> tuple[float, float]:
    """Rough (bytes, seconds) of one forward+backward, to skip what cannot fit or finish."""
    kind, name, config, _ = VARIANTS[variant]
    f32 = 4
    if name == "symile" and kind == "reference":  # per anchor: N^(M-1) x d products, N x N^(M-1) logits
        per_anchor = 2 * n ** (m - 1) * d + 2 * n ** m
        return m * per_anchor * f32, m * n ** m * (2 * d / 2e10 + 3e-8)
    if name == "symile" and config.get("negatives") == "n_squared":
        kept = 2 * n ** (m - 1) if 2 * n ** (m - 1) <= (1 << 23) else 0  # per-row shifts kept for backward
        return (4 * (1 << 22) + n ** (m - 2) + kept) * f32, n ** m * (8 * d / 1.5e11 + 1.5e-9)
    rows = n * m if name.startswith("mv_") else n
    pairs = m * (m - 1) // 2
    chunk = config.get("chunk_size")
    square = (chunk or rows) * rows * (1 if name == "mv_infonce" else pairs) * (m if name == "gram" else 1)
    if name in ("dcl", "dclw") and config.get("negatives") != "cross_modal":
        square *= 4  # an N x 2N block per direction
    return 6 * square * f32, 6 * rows * rows * pairs * (d + 20) / 1e10


def run_one(spec: dict) -> dict:
    """Measure one configuration in this process (called in a subprocess)."""
    import torch
    import torch.nn.functional as F

    import polyalign

    torch.set_num_threads(spec["threads"])
    kind, name, config, _ = VARIANTS[spec["variant"]]
    n, m, d = spec["batch"], spec["modalities"], spec["dim"]
    names = [f"m{k}" for k in range(m)]
    scale = torch.tensor(1 / 0.07)
    if kind == "reference" and name == "symile":
        from symile import Symile
        ref = Symile("n_squared")
        fn = lambda zs: ref(zs, scale)  # noqa: E731
    elif kind == "reference":
        from open_clip.loss import ClipLoss
        ref = ClipLoss()
        fn = lambda zs: ref(zs[0], zs[1], scale)  # noqa: E731
    else:
        loss = polyalign.build("loss", name, modalities=names, embed_dim=d, **config)
        fn = lambda zs: loss(dict(zip(names, zs))).loss  # noqa: E731

    def inputs(rows: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        return [F.normalize(torch.randn(rows, d, generator=g), dim=1).requires_grad_() for _ in range(m)]

    def step(zs: list[torch.Tensor]) -> tuple[float, float]:
        for z in zs:
            z.grad = None
        t0 = time.perf_counter()
        value = fn(zs)
        value.backward()
        return time.perf_counter() - t0, float(value.detach())

    step(inputs(2 * config.get("chunk_size", 4) + 1))  # warm-up on the same code path (blockwise if chunked)
    zs = inputs(n)
    Path("/proc/self/clear_refs").write_text("5")
    base = _status_kb("VmRSS")
    first, value = step(zs)
    peak_mb = (_status_kb("VmHWM") - base) / 1024
    times = [first]
    while sum(times) < spec["time_budget"] and len(times) < spec["repeats"]:
        times.append(step(zs)[0])
    return {"seconds": statistics.median(times), "runs": len(times), "peak_mb": peak_mb, "value": value}


def matmul_rate(threads: int, n: int = 512, d: int = 128, rows: int = 12) -> float:
    """FLOP/s of the block matmul Symile's n_squared runs: ``(rows·N, d) @ (d, N)``, output reused."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(rows * n, d), torch.randn(d, n)
    out = torch.empty(rows * n, n)
    torch.mm(a, b, out=out)
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - t0)
    return 2 * rows * n * n * d / statistics.median(times)


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def _mem_available() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 8e9


def machine() -> dict:
    """The machine the figures come from."""
    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "ram_gb": round(os.sysconf("SC_PAGE_SIZE") *
                                                                   os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
            "torch": torch.__version__, "python": platform.python_version(),
            "load_average_at_start": os.getloadavg()}


def table(results: list[dict], batches: list[int]) -> str:
    """Markdown: one row per (variant, M), one column per batch: seconds / peak MB."""
    lines = ["| loss | M | " + " | ".join(f"N={n}" for n in batches) + " |",
             "|---|---|" + "---|" * len(batches)]
    keys = []
    for r in results:
        if (r["variant"], r["modalities"]) not in keys:
            keys.append((r["variant"], r["modalities"]))
    for variant, m in keys:
        cells = []
        for n in batches:
            r = next((r for r in results if (r["variant"], r["modalities"], r["batch"]) == (variant, m, n)), None)
            if r is None:
                cells.append("")
            elif "skipped" in r:
                cells.append(f"skipped: {r['skipped']}")
            elif "error" in r:
                cells.append(f"failed: {r['error']}")
            else:
                cells.append(f"{r['seconds']:.3g} s / {max(r['peak_mb'], 0.0):.0f} MB")
        lines.append(f"| {variant} | {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--modalities", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs at most (median reported)")
    parser.add_argument("--time-budget", type=float, default=20.0, help="stop repeating after this many seconds")
    parser.add_argument("--max-seconds", type=float, default=240.0, help="skip configurations estimated slower")
    parser.add_argument("--max-gb", type=float, default=None, help="skip configurations estimated larger "
                                                                   "(default: 70%% of available memory)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--matmul-rate", action="store_true",
                        help="only print the machine's matmul rate and the n_squared floor at d, M = 3")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    if args.matmul_rate:
        rate = matmul_rate(args.threads, d=args.dim)
        print(f"matmul rate: {rate / 1e9:.0f} GFLOP/s with {args.threads} thread(s)")
        for n in args.batches:  # the floor: five passes of 2·N³·d flops
            print(f"symile n_squared floor at N={n}, M=3, d={args.dim}: {5 * 2 * n ** 3 * args.dim / rate:.3g} s")
        return
    max_bytes = (args.max_gb * 1e9) if args.max_gb else 0.7 * _mem_available()
    results = []
    for variant in args.variants:
        for m in args.modalities:
            if m not in VARIANTS[variant][3]:
                continue
            for n in args.batches:
                spec = {"variant": variant, "batch": n, "modalities": m, "dim": args.dim,
                        "threads": args.threads, "repeats": args.repeats, "time_budget": args.time_budget}
                need_bytes, need_s = estimate(variant, n, m, args.dim)
                row = dict(spec)
                if need_bytes > max_bytes:
                    row["skipped"] = f"needs ~{need_bytes / 1e9:.0f} GB"
                elif need_s > args.max_seconds:
                    row["skipped"] = f"~{need_s / 60:.0f} min" if need_s < 7200 else f"~{need_s / 3600:.0f} h"
                else:
                    proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)],
                                          capture_output=True, text=True)
                    if proc.returncode == 0:
                        row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
                    else:
                        row["error"] = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:120]
                results.append(row)
                shown = {k: row[k] for k in ("seconds", "peak_mb", "value", "skipped", "error") if k in row}
                print(f"{variant:32s} M={m} N={n:5d} {shown}", flush=True)
    print()
    print(table(results, args.batches))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "dim": args.dim, "threads": args.threads,
                                    "results": results}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
