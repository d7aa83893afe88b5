"""Values from a request, made safe for the encoders: text stays a ``str`` (which every encoder reads as
text, never as a path on the server's disk), an upload is held in memory as a
:class:`~polyalign.core.encoder.FileBytes`, and numbers are checked."""

from __future__ import annotations

import io
import math
import re
from pathlib import PurePosixPath
from typing import Any

from polyalign.core.encoder import FileBytes
from polyalign.core.errors import PolyalignError, cut, shown
from polyalign.files.json_file import JsonError, parse_json
from polyalign.files.manifest_file import parse_cell

# what an upload without a usable file name is taken to be, from its content type
SUFFIX_OF_TYPE = {"image/png": ".png", "image/jpeg": ".jpg", "audio/wav": ".wav", "audio/x-wav": ".wav",
                  "audio/wave": ".wav", "audio/flac": ".flac", "text/plain": ".txt"}


class RequestError(PolyalignError):
    """A request the server refuses: the HTTP status and a message saying what was wrong (cut as every polyalign
    error is, once, where it is made)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def check_numbers(value: Any, where: str) -> None:
    """Refuse anything but finite numbers (and null, for a missing table entry) inside a list or mapping."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, bool) or not (item is None or isinstance(item, (int, float))):
            raise RequestError(422, f"{where}: {shown(item)} inside a list or mapping; only numbers (and null) "
                                    f"may be nested; send text as a value of its own")
        elif isinstance(item, float) and not math.isfinite(item):
            raise RequestError(422, f"{where}: holds {item} (NaN or infinity); send finite numbers")


def inline_value(modality: str, index: int, value: Any) -> Any:
    """One JSON value: text, or a number, list or mapping of numbers, as it is."""
    where = f"modality {modality!r}, value {index}"
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool):
        raise RequestError(422, f"{where}: {shown(value)} is no value; send text, numbers or a file upload")
    check_numbers(value, where)
    return value


def form_value(modality: str, index: int, text: str) -> Any:
    """A form field's text: ``[...]``/``{...}`` is JSON (numbers), anything else is text (never a path)."""
    try:
        value = parse_cell(text, f"modality {modality!r}, value {index}")
    except PolyalignError as exc:
        raise RequestError(422, str(exc)) from None
    return inline_value(modality, index, value)


def upload_name(filename: str | None, content_type: str | None) -> str:
    """A name for an upload's bytes in messages: the client's base name (plain characters only)
    ending in its extension, or one from the content type. Never used as a path."""
    base = PurePosixPath((filename or "").replace("\\", "/")).name
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base)[-80:]
    if not re.search(r"\.[A-Za-z0-9]{1,8}$", base):
        base += SUFFIX_OF_TYPE.get((content_type or "").split(";")[0].strip().lower(), "")
    return f"upload {base or 'file'}"


def upload_value(data: bytes, filename: str | None, content_type: str | None) -> FileBytes:
    """An uploaded file, held in memory, read by the encoder as it reads a file of that extension."""
    return FileBytes(upload_name(filename, content_type), data)


def read_json(body: bytes) -> Any:
    """A request body as JSON, or a 400 saying why it is not."""
    try:
        return parse_json(body, "body")
    except JsonError as exc:  # not JSON, not UTF-8, nested too deeply (the bounded reader's message)
        raise RequestError(400, f"the body is not valid JSON ({cut(str(exc).removeprefix('body: '), 200)}); send "
                                f"Content-Type: application/json or multipart/form-data") from None


def count_values(values: dict[str, list[Any]], limit: int, example: str) -> None:
    """Refuse a request holding more than ``limit`` values (413, naming the limit), or none (422,
    saying what to send: ``example``)."""
    n = sum(len(v) for v in values.values())
    if n > limit:
        raise RequestError(413, f"{n} values in one request; the limit is {limit} (polyalign serve --max-values)")
    if n == 0:
        raise RequestError(422, f"no values given; {example}")


IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".aiff", ".aif"})


def decoded_numbers(value: Any) -> int:
    """How many numbers an upload decodes to, read from its header without decoding it: an image's pixels
    (width x height x bands), an audio file's samples (frames x channels), a ``.npy`` array's entries; 0 for
    anything else (text, inline numbers: bounded by the body's size) or a header that does not read (the
    encoder then says what is wrong with the file)."""
    if not isinstance(value, FileBytes):
        return 0
    suffix = PurePosixPath(value.name).suffix.lower()
    try:
        if suffix in IMAGE_SUFFIXES:
            from PIL import Image

            with Image.open(io.BytesIO(value.data)) as img:  # reads the header only
                return img.size[0] * img.size[1] * len(img.getbands())
        if suffix in AUDIO_SUFFIXES:
            import soundfile

            info = soundfile.info(io.BytesIO(value.data))
            return int(info.frames) * int(info.channels)
        if suffix == ".npy":
            from numpy.lib import format as npy

            fh = io.BytesIO(value.data)
            read = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}.get(npy.read_magic(fh))
            return math.prod(read(fh)[0]) if read else 0
    except Exception:  # noqa: BLE001 - not readable as such: the encoder refuses it with its own message
        return 0
    return 0


def check_decode_budget(values: dict[str, list[Any]], limit_millions: float) -> None:
    """Refuse a request whose uploads decode to more than ``limit_millions`` million numbers in all (413,
    naming the largest ones and the option), from their headers, before anything is decoded."""
    sizes = [(f"{m!r} value {i} ({v.name})", n) for m, vs in values.items() for i, v in enumerate(vs)
             if (n := decoded_numbers(v))]
    total = sum(n for _, n in sizes)
    if total > limit_millions * 1e6:
        largest = ", ".join(f"{where}: {n / 1e6:.1f} million" for where, n in sorted(sizes, key=lambda x: -x[1])[:3])
        raise RequestError(413, f"the uploads of this request decode to {total / 1e6:.1f} million numbers (pixels x "
                                f"bands, audio samples, array entries; largest: {largest}); the limit is "
                                f"{limit_millions:g} million per request (polyalign serve --max-decoded-millions). "
                                f"Send fewer or smaller files per request")
