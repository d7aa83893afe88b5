"""``polyalign embed`` and ``polyalign search``: a trained model over folders, manifests and arrays."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polyalign.core.data import describe_value
from polyalign.core.errors import PolyalignError

from .embeddings_file import check_same_model, read_embeddings, save_embeddings
from .sources import Values, one_value, query_value, read_source, split_assignment
from .trained import Hit, TrainedModel, rank_hits


def embed_source(model: TrainedModel, modality: str, source: str | Path, batch_size: int | None = None,
                 single: bool = False) -> tuple[torch.Tensor, Values]:
    """Embeddings ``(N, E)`` of every ``modality`` value in ``source`` (folder, manifest, ...), and the
    values; with ``single``, ``source`` is one value (a path, text or ``[numbers]``)."""
    model.check_modality(modality)
    found = one_value(str(source)) if single else read_source(source, modality)
    try:
        return model.embed({modality: found.values}, root=found.root, batch_size=batch_size)[modality], found
    except PolyalignError as exc:
        if single or Path(source).suffix != ".npy":
            raise
        raise PolyalignError(f"{exc} ({source} was read as {len(found.values)} value(s), one per row of its first "
                             f"axis; if the file holds one value, embed it with `polyalign embed --value "
                             f"{source}`)") from exc


def embed_to_file(model: TrainedModel, modality: str, source: str | Path, out: str | Path,
                  batch_size: int | None = None, single: bool = False) -> tuple[Path, int]:
    """Embed ``source`` (or, with ``single``, the one value it names) and write the embeddings with
    their ids to ``out`` (.safetensors)."""
    embeddings, found = embed_source(model, modality, source, batch_size, single)
    return save_embeddings(out, model, modality, embeddings, found.ids, str(source)), len(found.ids)


def candidate_bank(model: TrainedModel, modality: str,
                   source: str | Path) -> tuple[torch.Tensor, list[Any], list[Any] | None]:
    """Candidate embeddings, ids and raw values (None from an embeddings file of this model)."""
    if str(source).endswith(".safetensors"):
        saved = read_embeddings(source)
        if saved.modality != modality:
            raise PolyalignError(f"{source} holds {saved.modality!r} embeddings, not {modality!r}")
        check_same_model(saved, model, source)
        return saved.embeddings.to(model.device), saved.ids, None
    embeddings, found = embed_source(model, modality, source)
    return embeddings, found.ids, found.values


def show_value(value: Any) -> str:
    """A short printable form of a raw value (arrays as plain lists of numbers)."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        value = np.asarray(value).round(4).tolist()
    return describe_value(value)


@dataclass
class SearchResult:
    """The ranked candidates of one query tuple."""

    target: str
    query: dict[str, Any]
    hits: list[Hit]
    n_candidates: int
    values: list[Any] | None = None  # the hits' raw values, when the candidates were not pre-embedded


def search_sources(model: TrainedModel, queries: list[str], candidates: str, top_k: int = 5) -> SearchResult:
    """Rank ``candidates`` (``MODALITY=SOURCE``) for one query tuple (``["MODALITY=VALUE", ...]``).

    Query values are inline text, ``[numbers]`` or paths relative to the current directory.
    """
    query: dict[str, Any] = {}
    for item in queries:
        m, value = split_assignment(item, "--query")
        if m in query:
            raise PolyalignError(f"--query {m}= is given twice; one query tuple has one value per modality")
        query[m] = query_value(value)
    if not query:
        raise PolyalignError("give at least one --query MODALITY=VALUE")
    target, source = split_assignment(candidates, "--candidates")
    model.check_modality(target)
    bank, ids, values = candidate_bank(model, target, source)
    scores = model.score_embeddings(model.embed({m: [v] for m, v in query.items()}), bank, target)
    hits = rank_hits(scores, top_k, ids)[0]
    return SearchResult(target, query, hits, int(bank.shape[0]),
                        None if values is None else [values[h.index] for h in hits])
