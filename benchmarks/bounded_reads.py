"""What the bounds on hostile files cost: polyalign's JSON reader against ``json.loads``, and opening an index
whose SHA-256 is trusted (size, mtime and inode unchanged) against one that is hashed again.

JSON: a string-heavy file (rows with 200-character captions full of brackets and quotes, as manifests and reports
are) and an index sidecar's list of integer ids, each parsed by ``json.loads`` and by
:func:`polyalign.files.json_file.parse_json` (``json.loads`` plus the nesting bound); the best of ``--repeats``.
Index: a flat index of ``--vectors`` random vectors written by ``write_index``, opened by ``read_index`` as written
(the recorded hash trusted), after its mtime changed (hashed again, then recorded) and once more (trusted); and
the SHA-256 of the file alone, what a trusted open saves (the rest is reading the ids and the index).

    python benchmarks/bounded_reads.py                 # writes benchmarks/results/bounded_reads.json
    python benchmarks/bounded_reads.py --vectors 20000 # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import string
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from polyalign.files.json_file import parse_json
from polyalign.inference.vector_index import IndexOptions, build_index, file_sha256, read_index, write_index

RESULTS = Path(__file__).resolve().parent / "results" / "bounded_reads.json"


def best(run: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` timings of ``run()``, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def json_texts(rows: int, ids: int) -> dict[str, str]:
    """The two JSON files timed: string-heavy rows, and a sidecar-like list of ids."""
    rng = random.Random(0)
    alphabet = string.ascii_letters + ' []{}"\\'
    captions = [{"id": i, "caption": "".join(rng.choices(alphabet, k=200)), "tags": ["a", "b"]} for i in range(rows)]
    return {"string-heavy rows": json.dumps(captions), "sidecar ids": json.dumps({"ids": list(range(ids))})}


def time_json(texts: dict[str, str], repeats: int) -> list[dict]:
    """``json.loads`` and ``parse_json`` seconds for each text."""
    rows = []
    for name, text in texts.items():
        loads, bounded = best(lambda: json.loads(text), repeats), best(lambda: parse_json(text, name), repeats)
        rows.append({"file": name, "mb": round(len(text) / 1e6, 2), "json_loads_s": round(loads, 4),
                     "parse_json_s": round(bounded, 4), "ratio": round(bounded / loads, 2)})
    return rows


def time_index(vectors: int, dim: int, folder: Path) -> dict:
    """``read_index`` seconds: trusted as written, hashed again after a changed mtime, trusted again."""
    data = np.random.default_rng(0).standard_normal((vectors, dim)).astype(np.float32)
    path = write_index(folder / "b.faiss", build_index(data, IndexOptions()), list(range(vectors)),
                       {"modality": "b", "kind": "flat"})
    seconds = {}
    for step in ("as written (trusted)", "mtime changed (hashed again)", "after that (trusted)"):
        if step.startswith("mtime"):
            st = path.stat()
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
        start = time.perf_counter()
        read_index(path)
        seconds[step] = round(time.perf_counter() - start, 4)
    start = time.perf_counter()
    file_sha256(path)
    return {"vectors": vectors, "dim": dim, "mb": round(path.stat().st_size / 1e6, 1), "read_index_s": seconds,
            "sha256_s": round(time.perf_counter() - start, 4)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows of the string-heavy file (20,000: 5 MB)")
    parser.add_argument("--ids", type=int, default=1_000_000, help="ids of the sidecar-like file")
    parser.add_argument("--vectors", type=int, default=1_000_000, help="vectors of the index (10^6 x 128: 512 MB)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    report = {"json": time_json(json_texts(args.rows, args.ids), args.repeats)}
    for row in report["json"]:
        print(json.dumps(row), flush=True)
    with tempfile.TemporaryDirectory() as folder:
        report["index"] = time_index(args.vectors, args.dim, Path(folder))
    print(json.dumps(report["index"]), flush=True)
    report["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                         "load_average_at_end": os.getloadavg()[0]}
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
