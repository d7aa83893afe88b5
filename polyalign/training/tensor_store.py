"""A folder of safetensors files holding tensors by key: the storage of the input and feature caches.

Entries are written a batch at a time, each batch to a new file (``part-<pid>-<n>.safetensors``,
written under a temporary name, then renamed), so several processes (DataLoader workers, ranks)
can fill one folder at once without locks, and a killed process leaves no half-written file.
A reader finds the entries through the files' headers; an entry holding a dict of tensors is
stored as ``<key>/<field>`` names.
"""

from __future__ import annotations

import os
import socket
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from polyalign.core.encoder import Input
from polyalign.core.errors import PolyalignError
from polyalign.files.atomic import describe_os_error, save_tensors

SUFFIX = ".safetensors"
OPEN_FILES = 64  # files kept open (memory-mapped) at once
RESCAN_SECONDS = 1.0  # a miss looks for files other processes wrote at most this often
ELSEWHERE = "or set cache.dir to another folder, then run the command again"


class TensorStore:
    """Tensors (or dicts of tensors) by string key in ``folder``; ``put`` buffers, ``flush`` writes."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PolyalignError(f"cannot create the cache folder {self.folder}: {describe_os_error(exc, ELSEWHERE)}. "
                                 f"Set cache.dir to a writable folder.") from exc
        self.index: dict[str, tuple[Path, tuple[str, ...] | None]] = {}  # key -> (file, dict fields or None)
        self.files: set[str] = set()
        self.pending: dict[str, Input] = {}
        self.handles: OrderedDict[Path, Any] = OrderedDict()
        self.written = 0
        self.scanned_at = 0.0
        self.refresh()

    def __getstate__(self) -> dict[str, Any]:  # open files stay with their process
        return {**self.__dict__, "handles": OrderedDict()}

    def __len__(self) -> int:
        return len(self.index) + len(self.pending)

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def refresh(self) -> None:
        """Index the files written since the last look (by this or any other process)."""
        from safetensors import safe_open

        self.scanned_at = time.monotonic()
        for path in sorted(self.folder.glob(f"*{SUFFIX}")):
            if path.name in self.files or path.name.startswith("."):  # `.tmp-*`: a write that did not finish
                continue
            try:
                with safe_open(str(path), "pt") as fh:
                    names = list(fh.keys())
            except Exception as exc:
                raise PolyalignError(f"cache file {path} cannot be read ({type(exc).__name__}: {exc}); delete "
                                     f"it (the entries it held are computed again)") from exc
            fields: dict[str, list[str]] = {}
            for name in names:
                key, _, field = name.partition("/")
                fields.setdefault(key, []).append(field)
            for key, found in fields.items():
                self.index[key] = (path, None if found == [""] else tuple(sorted(found)))
            self.files.add(path.name)

    def get(self, key: str) -> Input | None:
        """The entry stored under ``key``, or None."""
        if key in self.pending:
            return self.pending[key]
        entry = self.index.get(key)
        if entry is None and time.monotonic() - self.scanned_at > RESCAN_SECONDS:
            self.refresh()
            entry = self.index.get(key)
        if entry is None:
            return None
        path, fields = entry
        handle = self._open(path)
        if fields is None:
            return handle.get_tensor(key)
        return {f: handle.get_tensor(f"{key}/{f}") for f in fields}

    def put(self, key: str, value: Input) -> None:
        """Keep ``value`` under ``key`` (written at the next :meth:`flush`)."""
        self.pending[key] = value

    def flush(self) -> None:
        """Write the pending entries to a new file of the folder."""
        if not self.pending:
            return
        tensors: dict[str, torch.Tensor] = {}
        for key, value in self.pending.items():
            items = value.items() if isinstance(value, dict) else [("", value)]
            for field, tensor in items:
                tensors[f"{key}/{field}" if field else key] = tensor.detach().cpu().contiguous().clone()
        name = f"part-{socket.gethostname()}-{os.getpid()}-{self.written:06d}-{time.time_ns()}{SUFFIX}"
        path = self.folder / name
        tmp = self.folder / f".tmp-{name}"
        try:
            save_tensors(tensors, tmp)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise PolyalignError(f"cannot write to the cache folder {self.folder}: "
                                 f"{describe_os_error(exc, ELSEWHERE)}. Nothing half-written is left there.") from exc
        self.written += 1
        self.files.add(name)
        for key, value in self.pending.items():
            self.index[key] = (path, tuple(sorted(value)) if isinstance(value, dict) else None)
        self.pending.clear()

    def _open(self, path: Path) -> Any:
        from safetensors import safe_open

        handle = self.handles.pop(path, None)
        if handle is None:
            try:
                handle = safe_open(str(path), "pt")
            except Exception as exc:
                raise PolyalignError(f"cache file {path} cannot be read ({type(exc).__name__}: {exc}); "
                                     f"delete it (the entries it held are computed again)") from exc
        self.handles[path] = handle
        while len(self.handles) > OPEN_FILES:
            self.handles.popitem(last=False)
        return handle
