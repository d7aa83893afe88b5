"""The key of a cache folder: everything the cached values of one encoder depend on besides the
values themselves (the value's own key is :func:`polyalign.training.input_cache.value_key`).

* ``inputs`` (what ``decode`` returned): the options that shape decoding (the encoder's
  ``load_options``; every option where it does not say), the library versions, the cache format.
* ``features`` (what a frozen encoder computed): every option of the encoder as it was built, its
  weights and buffers, the library versions, the cache format.

Both also hold the size and modification time of the files and folders the options name (a model
folder whose tokenizer or preprocessing was rewritten in place).

A change to any of them names another folder, so a stale entry is never read.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel

from polyalign.core.encoder import Encoder
from polyalign.core.recipe_schema import PluginNode

CACHE_FORMAT = 2  # bump when what a cache file means changes
LIBRARIES = ("polyalign", "torch", "numpy", "pillow", "torchvision", "torchaudio", "soundfile", "wfdb", "timm",
             "transformers", "tokenizers", "open_clip_torch", "peft")  # what the built-in encoders compute with


def encoder_options(node: PluginNode, encoder: Encoder) -> dict[str, Any]:
    """Every option of a built encoder: its pydantic config with the defaults filled in (``encoder.config``,
    else its recipe ``node``'s options), updated with what it inferred from the data (``rebuild_options``)."""
    config = getattr(encoder, "config", None)
    options = config.model_dump(mode="json") if isinstance(config, BaseModel) else node.options()
    return {**options, **encoder.rebuild_options()}


MAX_FOLDER_FILES = 200  # files of a folder an option names whose state enters the key


def file_states(options: dict[str, Any]) -> dict[str, Any]:
    """The state (size, modification time) of the files and folders the options name (a model folder,
    a weights file), so that one rewritten in place (a new tokenizer, new preprocessing) changes the key."""
    states: dict[str, Any] = {}
    for name, value in sorted(options.items()):
        if not isinstance(value, str) or not value.strip():
            continue
        path = Path(value).expanduser()
        try:
            if path.is_file():
                st = path.stat()
                states[name] = [st.st_size, st.st_mtime_ns]
            elif path.is_dir():
                files = sorted(p for p in path.iterdir() if p.is_file())[:MAX_FOLDER_FILES]
                states[name] = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
        except OSError:  # unreadable: the encoder said what it could when it was built
            continue
    return states


@functools.lru_cache(maxsize=None)
def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=None)
def _distributions_of(module: str) -> tuple[str, ...]:
    top = module.split(".")[0]
    if top == "polyalign":  # a built-in: its libraries are in LIBRARIES
        return ()
    return tuple(sorted(importlib.metadata.packages_distributions().get(top, ())))


def library_versions(encoder: Encoder) -> dict[str, str | None]:
    """The installed versions of the libraries encoders compute with, and of the encoder's own package."""
    names = {*LIBRARIES, *_distributions_of(type(encoder).__module__)}
    return {name: _version(name) for name in sorted(names)}


def weights_digest(encoder: Encoder) -> str:
    """A hash of an encoder's weights and buffers."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in encoder.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def options_key(node: PluginNode, encoder: Encoder, kind: Literal["inputs", "features"]) -> str:
    """The folder name of the cached values of ``kind`` of ``encoder`` (built from the recipe ``node``
    ``modalities.<m>.encoder``): the encoder's class and a hash of all the values depend on."""
    options = encoder.load_options() if kind == "inputs" else None
    if options is None:
        options = encoder_options(node, encoder)
    depends: dict[str, Any] = {
        "format": CACHE_FORMAT, "kind": kind, "plugin": node.plugin,
        "class": f"{type(encoder).__module__}.{type(encoder).__qualname__}",
        "options": options, "files": file_states(options), "libraries": library_versions(encoder)}
    if kind == "features":
        depends["weights"] = weights_digest(encoder)
    text = json.dumps(depends, sort_keys=True, default=str)
    return f"{type(encoder).__name__}-{hashlib.blake2b(text.encode(), digest_size=8).hexdigest()}"
