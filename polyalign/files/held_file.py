"""A file held in memory (a member of a shard), read as a path is read."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FileBytes:
    """A file held in memory (a member of a shard): read it as you would read a ``Path``.

    ``name`` says where it came from (``shard.tar:key.png``) and ends with the file's
    extension, so ``suffix`` and error messages work as they do for a path.
    """

    name: str
    data: bytes

    def __str__(self) -> str:
        return self.name

    @property
    def suffix(self) -> str:
        """The extension, with its dot (``.png``), as :attr:`pathlib.Path.suffix`."""
        return Path(self.name).suffix

    def open(self, mode: str = "rb") -> io.BytesIO:
        """A binary file object over the bytes (only reading is possible)."""
        if mode != "rb":
            raise ValueError(f"{self.name}: a file held in memory opens only for reading ('rb')")
        return io.BytesIO(self.data)

    def read_bytes(self) -> bytes:
        """The file's bytes."""
        return self.data

    def read_text(self, encoding: str = "utf-8") -> str:
        """The file's text (raises UnicodeDecodeError if it is not ``encoding``)."""
        return self.data.decode(encoding)
