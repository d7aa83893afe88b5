"""Reading ``.npy`` files that may be hostile: numbers only, and a header that fits the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import PolyalignError, cut


def read_npy(path: Path, what: str = "NumPy array") -> np.ndarray:
    """The array in the ``.npy`` file ``path`` (``what`` it should hold names it in errors).

    The file is memory-mapped before it is copied, so a header that announces more data than the
    file holds (a truncated file, or a forged shape of 10^12 rows) is refused before anything is
    allocated; an array of Python objects is refused, never unpickled.
    """
    try:
        return np.array(np.load(path, mmap_mode="r", allow_pickle=False))
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
