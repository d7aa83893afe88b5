"""Files kept open (memory-mapped) by key, at most a bounded number per process: the caches' open shards and parts."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class OpenFiles(Generic[K, V]):
    """At most ``limit`` open files by key; the least recently used is let go first. A copy sent to another
    process (a DataLoader worker) starts with none: open files stay with their process."""

    def __init__(self, limit: int):
        self.limit = limit
        self.files: OrderedDict[K, V] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        return {"limit": self.limit, "files": OrderedDict()}

    def __len__(self) -> int:
        return len(self.files)

    def get(self, key: K, open_file: Callable[[K], V | None]) -> V | None:
        """The file open under ``key``, else ``open_file(key)`` kept (None, when there is no such file, is not)."""
        if key in self.files:
            self.files.move_to_end(key)
            return self.files[key]
        opened = open_file(key)
        if opened is not None:
            self.files[key] = opened
            while len(self.files) > self.limit:
                self.files.popitem(last=False)
        return opened
