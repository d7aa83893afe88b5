"""Pretrained weights for encoders: local files only, read safely, checked against the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polyalign.core.errors import PolyalignError
from polyalign.files.weights import load_failure, torch_load_safely


def refuse_download(value: bool | str) -> bool | str:
    """Validator of a ``pretrained`` option: ``true`` (download the weights) is refused."""
    if value is True:
        raise ValueError("pretrained: true would download weights, which polyalign never does; give the path "
                         "of a local weights file (.safetensors, .pth), or false")
    return value


def local_weights_file(path: str, what: str) -> Path:
    """A local weights file named in a config (never a URL or hub name)."""
    if "://" in path:
        raise PolyalignError(f"{what}: {path!r} looks like a URL; polyalign never downloads weights. "
                             f"Download the file yourself and give its local path.")
    file = Path(path).expanduser()
    if not file.is_file():
        raise PolyalignError(f"{what}: weights file not found: {file}. Give the path to a local "
                             f".safetensors or .pth file.")
    return file


def read_state_dict(file: Path, what: str) -> dict:
    """Tensors of a ``.safetensors`` or ``.pth``/``.pt``/``.bin`` file (no pickled code is run).

    A checkpoint that nests its weights under ``state_dict`` or ``model`` is unwrapped, and a
    ``module.`` prefix left by DataParallel is removed.
    """
    import torch

    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch_load_safely(file)
    except Exception as exc:
        raise PolyalignError(f"{what}: cannot read weights from {file}: {load_failure(exc)}. polyalign only "
                             f"loads tensors, never pickled code.") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PolyalignError(f"{what}: {file} does not hold a state dict (name -> tensor)")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_weights_into(module: Any, file: Path, what: str, ignore_prefixes: tuple[str, ...] = ()) -> None:
    """Load a weights file into ``module``; every module weight must be found, shapes must match.

    Keys of the file starting with one of ``ignore_prefixes`` (e.g. a classifier head the
    encoder does not have) are ignored; any other extra key is an error.
    """
    state = read_state_dict(file, what)
    own = module.state_dict()
    extra = [k for k in state if k not in own and not k.startswith(ignore_prefixes)]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if extra or missing or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weight(s) missing from the file (e.g. {', '.join(missing[:3])})")
        if extra:
            parts.append(f"{len(extra)} unexpected weight(s) (e.g. {', '.join(extra[:3])})")
        if wrong:
            parts.append(f"shape mismatches (file vs model): {'; '.join(wrong[:3])}")
        raise PolyalignError(f"{what}: {file} does not fit the model: {'; '.join(parts)}. Check that "
                             f"the file was saved from the same architecture and options.")
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
