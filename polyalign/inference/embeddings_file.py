"""Embeddings files: one safetensors tensor plus the ids and the model that made it, in its metadata."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from polyalign.core.errors import PolyalignError, cut, not_a_file, shown
from polyalign.files.atomic import atomic_write_bytes
from polyalign.files.json_file import JsonError, parse_json

from .sources import check_ids
from .trained import TrainedModel

FORMAT = "polyalign.embeddings/1"
TENSOR = "embeddings"


@dataclass
class EmbeddingsFile:
    """What an embeddings file holds: ``embeddings`` (N, E), one id per row, and provenance."""

    embeddings: torch.Tensor
    ids: list[Any]
    modality: str
    metadata: dict[str, str]


def provenance(model: TrainedModel, modality: str, source: str) -> dict[str, str]:
    """What made a file of embeddings: the modality, the model (its weights' SHA-256) and the input."""
    return {"modality": modality, "model": model.recipe.name, "model_path": str(model.source),
            "checkpoint": model.checkpoint, "weights_sha256": model.weights_sha256,
            "embed_dim": str(model.embed_dim), "input": source}


def save_embeddings(path: str | Path, model: TrainedModel, modality: str, embeddings: torch.Tensor,
                    ids: list[Any], source: str = "") -> Path:
    """Write ``embeddings`` with their ``ids`` (safetensors metadata ``ids``, a JSON list)."""
    if len(ids) != embeddings.shape[0]:
        raise PolyalignError(f"{len(ids)} ids for {embeddings.shape[0]} embeddings")
    bad = (~torch.isfinite(embeddings).all(dim=-1)).nonzero().flatten().tolist()
    if bad:
        raise PolyalignError(f"the values with ids {shown([ids[i] for i in bad[:5]])} give NaN or infinite "
                             f"embeddings (a NaN or infinity in the values?); nothing was written")
    metadata = {"format": FORMAT, **provenance(model, modality, source), "ids": json.dumps(ids)}
    path = Path(path)
    if path.suffix != ".safetensors":
        raise PolyalignError(f"--out {path}: an embeddings file must end in .safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save({TENSOR: embeddings.detach().float().cpu().contiguous()}, metadata))
    return path


def read_embeddings(path: str | Path) -> EmbeddingsFile:
    """An embeddings file written by :func:`save_embeddings` (``polyalign embed``), checked: a 2-D
    floating tensor of finite numbers, one JSON id per row, and its modality."""
    path = Path(path)
    if not path.is_file():
        raise PolyalignError(f"cannot read the embeddings file: {not_a_file(path)}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            if metadata.get("format") != FORMAT or TENSOR not in fh.keys():
                raise PolyalignError(f"{path} is not an embeddings file written by `polyalign embed`")
            tensor = fh.get_tensor(TENSOR)
    except (OSError, SafetensorError) as exc:
        raise PolyalignError(f"cannot read {path} as a safetensors file: {cut(str(exc), 300)}") from None
    redo = "embed the candidates again with `polyalign embed`"
    if tensor.dim() != 2 or not tensor.is_floating_point():
        raise PolyalignError(f"{path}: {TENSOR!r} must be a 2-D floating tensor (one row per value), got "
                             f"{tuple(tensor.shape)} {tensor.dtype}; {redo}")
    if not torch.isfinite(tensor).all():
        raise PolyalignError(f"{path}: {TENSOR!r} holds NaN or infinite values; {redo}")
    try:
        ids = parse_json(metadata["ids"], f"{path}: the metadata 'ids'")
    except (KeyError, JsonError):
        raise PolyalignError(f"{path}: the metadata 'ids' must be a JSON list of ids, one per row; {redo}") from None
    if not isinstance(ids, list) or len(ids) != tensor.shape[0]:
        raise PolyalignError(f"{path}: the metadata 'ids' must be a JSON list of {tensor.shape[0]} ids (text or "
                             f"numbers), one per row; {redo}")
    check_ids(ids, f"{path}: the metadata 'ids'", f"; {redo}")
    if not isinstance(metadata.get("modality"), str):
        raise PolyalignError(f"{path}: the metadata does not say which modality it holds; {redo}")
    return EmbeddingsFile(tensor.float(), ids, metadata["modality"], metadata)


def check_same_model(metadata: dict[str, Any], model: TrainedModel, path: str | Path, command: str = "embed") -> None:
    """Refuse embeddings (or an index of them) made by another model, compared by the SHA-256 of
    the weights; ``command`` is the one that makes them again."""
    if metadata.get("weights_sha256") != model.weights_sha256:
        raise PolyalignError(f"{path} was embedded by another model ({metadata.get('model_path')}, "
                             f"checkpoint {metadata.get('checkpoint')}); embed the candidates again "
                             f"with this one: polyalign {command} {model.source} --modality "
                             f"{metadata.get('modality')} ...")
