"""Read the records of W&B offline run files (``run-<id>.wandb``), as `wandb sync` would upload them.

The file is W&B's record log: a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks of
chunks, each with a 7-byte header (CRC32, length, type: 1 full, 2 first, 3 middle, 4 last) and a
piece of a serialised ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any, Iterator

from google.protobuf.message import DecodeError

BLOCK = 32 * 1024
HEADER = 7


def records(path: Path) -> Iterator[Any]:
    """Every protobuf record of one offline run file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, pieces = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # the rest of a block too short for a chunk header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos: pos + HEADER])
        if length == 0 and kind == 0:
            pos += left
            continue
        pieces += data[pos + HEADER: pos + HEADER + length]
        pos += HEADER + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            pieces = b""
            yield record


def finished_records(path: Path, timeout: float = 60.0) -> list[Any]:
    """The records of a run file once it holds its ``exit`` record: W&B's service process may
    still be writing the file for a moment after ``run.finish()`` returns."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = list(records(path))
            if any(r.WhichOneof("record_type") == "exit" for r in found):
                return found
        except DecodeError:  # a record being written
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} has no exit record after {timeout:.0f} s")
        time.sleep(0.2)


def offline_runs(run_dir: Path) -> list[dict[str, Any]]:
    """Each offline run under ``run_dir/wandb``, oldest first: its id, config, branch point and
    history rows ``{key: value}`` (values decoded from JSON; the fields of a logged table or image
    under ``key/field``)."""
    runs = []
    for path in sorted((Path(run_dir) / "wandb").glob("offline-run-*/run-*.wandb")):
        run: dict[str, Any] = {"history": [], "config": {}, "branch_point": None}
        for record in finished_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run["id"] = record.run.run_id
                run["config"] = {i.key: json.loads(i.value_json) for i in record.run.config.update}
                if record.run.HasField("branch_point"):
                    run["branch_point"] = int(record.run.branch_point.value)
            elif kind == "history":
                run["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                       for i in record.history.item})
        runs.append(run)
    return runs
