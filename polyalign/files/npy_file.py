"""Reading ``.npy`` files that may be hostile: numbers only, and a header that fits the file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from polyalign.core.errors import PolyalignError, cut

from .held_file import FileBytes


def read_npy(path: Path | FileBytes, what: str = "NumPy array") -> np.ndarray:
    """The array in the ``.npy`` file ``path`` (``what`` it should hold names it in errors).

    The file is memory-mapped before it is copied (a file held in memory has its header checked
    against its size), so a header that announces more data than the file holds (a truncated
    file, or a forged shape of 10^12 rows) is refused before anything is allocated; an array of
    Python objects is refused, never unpickled; so is an array of anything but booleans, integers
    and real numbers (complex numbers, text, dates), which would otherwise be cut or converted.
    """
    try:
        if isinstance(path, FileBytes):
            return _numbers(_read_held(path), path, what)
        return np.array(_numbers(np.load(path, mmap_mode="r", allow_pickle=False), path, what))
    except ValueError as exc:
        text = str(exc)
        if "mmap length" in text:
            reason = "its header announces more data than the file holds (a truncated file or a forged header)"
        elif "pickled" in text or "Python objects" in text:
            reason = "it does not hold a plain array of numbers (polyalign never unpickles Python objects)"
        else:
            reason = f"not a valid .npy file ({cut(text, 200)})"
        raise PolyalignError(f"cannot read {what} {path}: {reason}") from None
    except OSError as exc:
        raise PolyalignError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _numbers(array: np.ndarray, path: Path | FileBytes, what: str) -> np.ndarray:
    """``array`` if it holds booleans, integers or real numbers; else an error naming its type."""
    if array.dtype.kind not in "biuf":
        raise PolyalignError(f"cannot read {what} {path}: it holds {array.dtype} values; polyalign reads arrays of "
                             f"booleans, integers and real numbers only (convert it, e.g. keep the real part, "
                             f"yourself)")
    return array


def _read_held(member: FileBytes) -> np.ndarray:
    """A ``.npy`` file held in memory, its header checked against its size first."""
    fh = member.open()
    major, _ = np.lib.format.read_magic(fh)
    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(fh)
    if not dtype.hasobject and math.prod(shape) * dtype.itemsize > len(member.data) - fh.tell():
        raise ValueError("mmap length is greater than file size")  # reported as for a file on disk
    fh.seek(0)
    return np.load(fh, allow_pickle=False)
