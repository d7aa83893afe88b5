"""``polyalign embed``, ``index`` and ``search``: a trained model over folders, manifests, arrays and indexes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polyalign.core.data import describe_value
from polyalign.core.errors import PolyalignError, shown

from .embeddings_file import check_same_model, provenance, read_embeddings, save_embeddings
from .sources import Values, one_value, query_value, read_source, split_assignment
from .trained import Hit, TrainedModel, rank_hits
from .vector_index import (
    SUFFIX,
    IndexFile,
    IndexOptions,
    build_index,
    index_settings,
    read_index,
    recall_at_k,
    sample_queries,
    write_index,
)


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


def candidate_bank(model: TrainedModel, modality: str, source: str | Path, batch_size: int | None = None
                   ) -> tuple[torch.Tensor, list[Any], list[Any] | None, Path | None]:
    """Candidate embeddings, ids, raw values (None from an embeddings file of this model) and the
    folder the values' relative paths resolve against."""
    if str(source).endswith(".safetensors"):
        saved = read_embeddings(source)
        if saved.modality != modality:
            raise PolyalignError(f"{source} holds {shown(saved.modality)} embeddings, not {modality!r}")
        check_same_model(saved.metadata, model, source)
        if saved.embeddings.shape[1] != model.embed_dim:
            raise PolyalignError(f"{source} holds embeddings of {saved.embeddings.shape[1]} numbers; this model's "
                                 f"have {model.embed_dim}")
        return saved.embeddings.to(model.device), saved.ids, None, None
    embeddings, found = embed_source(model, modality, source, batch_size)
    return embeddings, found.ids, found.values, found.root


def check_index_serves(model: TrainedModel, target: str) -> None:
    """Refuse to index ``target`` when the run's loss gives no query of the other modalities an
    inner-product form (each one alone, and all of them together, are tried)."""
    others = [m for m in model.modalities if m != target]
    probe = torch.zeros(1, model.embed_dim, device=model.device)
    for query in [[m] for m in others] + ([others] if len(others) > 1 else []):
        try:
            model.inner_product_query({m: probe for m in query}, target)
            return
        except PolyalignError as exc:
            refusal = exc
    raise refusal


@dataclass
class IndexReport:
    """What ``polyalign index`` wrote: the file, how many vectors, and the recall it measured."""

    path: Path
    count: int
    recall: float | None
    recall_queries: int


def index_to_file(model: TrainedModel, modality: str, source: str | Path, out: str | Path,
                  options: IndexOptions, batch_size: int | None = None) -> IndexReport:
    """Embed ``source`` (or read an embeddings file of this model) and write a faiss index of it;
    an approximate index has its recall@10 measured against exact search on a sample of its vectors."""
    model.check_modality(modality)
    check_index_serves(model, modality)
    if Path(out).suffix != SUFFIX:
        raise PolyalignError(f"--out {out}: an index file must end in {SUFFIX}")
    bank, ids, _, _ = candidate_bank(model, modality, source, batch_size)
    vectors = bank.detach().float().cpu().numpy()
    index = build_index(vectors, options)
    queries = sample_queries(vectors)
    recall = None if options.kind == "flat" else recall_at_k(index, vectors, queries)
    metadata = {**provenance(model, modality, str(source)), **index_settings(index, options),
                "recall_at_10": recall, "recall_queries": len(queries) if recall is not None else 0}
    return IndexReport(write_index(out, index, ids, metadata), len(ids), recall, metadata["recall_queries"])


def open_index(model: TrainedModel, target: str, path: str | Path) -> IndexFile:
    """The index at ``path``, checked: it holds ``target`` embeddings made by this model."""
    found = read_index(path)
    if found.modality != target:
        raise PolyalignError(f"{path} indexes {found.modality!r} embeddings, not {target!r}")
    check_same_model(found.metadata, model, path, command="index")
    if found.index.d != model.embed_dim:
        raise PolyalignError(f"{path} holds vectors of {found.index.d} numbers; this model's embeddings have "
                             f"{model.embed_dim}: build the index again with `polyalign index {model.source} ...`")
    return found


def rank_in_index(model: TrainedModel, queries: dict[str, torch.Tensor], target: str, found: IndexFile,
                  top_k: int) -> list[list[Hit]]:
    """The ``top_k`` candidates of an opened index for each embedded query tuple (a row of every
    ``queries[m]``), ranked by the index and scored with the run's own rule."""
    if top_k < 1:
        raise PolyalignError(f"top_k must be at least 1, got {top_k}")
    vectors = model.inner_product_query(queries, target)
    hits = []
    for i, found_rows in enumerate(found.search(vectors.cpu().numpy(), top_k)):
        rows = [int(r) for r in found_rows if r >= 0]
        bank = torch.from_numpy(found.vectors(rows)).to(model.device)
        scores = model.score_embeddings({m: z[i:i + 1] for m, z in queries.items()}, bank, target)[0].tolist()
        hits.append([Hit(rank + 1, r, found.ids[r], s) for rank, (r, s) in enumerate(zip(rows, scores))])
    return hits


def index_hits(model: TrainedModel, queries: dict[str, torch.Tensor], target: str, path: str | Path,
               top_k: int) -> tuple[list[Hit], int]:
    """The ``top_k`` candidates of a faiss index for one embedded query tuple, scored with the
    run's own rule; and how many candidates the index holds."""
    if top_k < 1:
        raise PolyalignError(f"top_k must be at least 1, got {top_k}")
    found = open_index(model, target, path)
    return rank_in_index(model, queries, target, found, top_k)[0], len(found.ids)


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
    embedded = model.embed({m: [v] for m, v in query.items()})
    if source.endswith(SUFFIX):
        hits, count = index_hits(model, embedded, target, source, top_k)
        return SearchResult(target, query, hits, count)
    bank, ids, values, _ = candidate_bank(model, target, source)
    hits = rank_hits(model.score_embeddings(embedded, bank, target), top_k, ids)[0]
    return SearchResult(target, query, hits, int(bank.shape[0]),
                        None if values is None else [values[h.index] for h in hits])
