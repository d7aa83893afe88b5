"""``polyalign embed``, ``index`` and ``search``: a trained model over folders, manifests, arrays and indexes."""

from __future__ import annotations

import hashlib
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


@dataclass
class Candidates:
    """What is known of a set of candidates beyond their embeddings: ids; raw values, the folder their
    relative paths resolve against and labels where the source has them (None from an embeddings
    file); and for each row the first row holding the same value (:func:`same_value_rows`)."""

    ids: list[Any]
    values: list[Any] | None = None
    root: Path | None = None
    labels: list[Any] | None = None
    first: list[int] | None = None

    @classmethod
    def of(cls, found: Values) -> Candidates:
        """The candidates read from a source, grouped by value."""
        return cls(found.ids, found.values, found.root, found.labels, same_value_rows(found.values, found.root))

    @property
    def repeats(self) -> int:
        """How many candidates repeat the value of an earlier one."""
        return 0 if self.first is None else sum(f != r for r, f in enumerate(self.first))

    def label(self, row: int) -> Any:
        """The label of candidate ``row``, or None."""
        return None if self.labels is None else self.labels[row]

    def text(self, row: int) -> str | None:
        """The text of candidate ``row`` when it is text (inline, or a .txt file's), else None."""
        return None if self.values is None else value_text(self.values[row], self.root)


TEXT_SHOWN = 2000  # characters of a text candidate a hit carries


def value_text(value: Any, root: Path | None) -> str | None:
    """A text value's text: a ``str`` itself, a .txt file's first :data:`TEXT_SHOWN` characters
    (UTF-8, undecodable bytes replaced); None for anything else or a file no longer there."""
    if isinstance(value, str):
        return value[:TEXT_SHOWN]
    if not isinstance(value, Path) or value.suffix.lower() != ".txt":
        return None
    path = value if value.is_absolute() or root is None else root / value
    try:
        with path.open("rb") as fh:
            return fh.read(4 * TEXT_SHOWN).decode("utf-8", errors="replace")[:TEXT_SHOWN].rstrip()
    except OSError:
        return None


def value_key(value: Any, root: Path | None) -> Any:
    """What makes two candidate values the same: a text's text, a file's bytes (hashed), an array's
    numbers; a file that cannot be read is only the same as itself."""
    text = value_text(value, root)
    if text is not None and not (isinstance(value, Path) and len(text) >= TEXT_SHOWN):
        return ("text", text)
    if isinstance(value, Path):
        path = value if value.is_absolute() or root is None else root / value
        try:
            return ("file", hashlib.sha256(path.read_bytes()).hexdigest())
        except OSError:
            return ("path", str(path))
    if isinstance(value, (np.ndarray, torch.Tensor)):
        array = np.ascontiguousarray(np.asarray(value))
        return ("array", array.shape, str(array.dtype), hashlib.sha256(array.tobytes()).hexdigest())
    return ("value", repr(value))


def same_value_rows(values: list[Any] | None, root: Path | None) -> list[int] | None:
    """For each candidate, the first row holding the same value (itself when none before it does)."""
    if values is None:
        return None
    seen: dict[Any, int] = {}
    return [seen.setdefault(("row", row) if v is None else value_key(v, root), row) for row, v in enumerate(values)]


def distinct_hits(hits: list[Hit], top_k: int, candidates: Candidates) -> list[Hit]:
    """The first ``top_k`` of ``hits`` holding different values, ranked again from 1, each naming
    the ids of every other candidate with its value (``same``). A search tool shows a value once:
    identical captions would otherwise fill the list with one result. Rank ``top_k +
    candidates.repeats`` hits to be sure of ``top_k`` distinct ones."""
    if candidates.first is None:
        return hits[:top_k]
    members: dict[int, list[int]] = {}
    for row, first in enumerate(candidates.first):
        members.setdefault(first, []).append(row)
    shown: set[int] = set()
    out: list[Hit] = []
    for hit in hits:
        first = candidates.first[hit.index]
        if first in shown:
            continue
        shown.add(first)
        same = tuple(candidates.ids[r] for r in members[first] if r != hit.index)
        out.append(Hit(len(out) + 1, hit.index, hit.id, hit.score, same))
        if len(out) == top_k:
            break
    return out


def candidate_bank(model: TrainedModel, modality: str, source: str | Path, batch_size: int | None = None
                   ) -> tuple[torch.Tensor, Candidates]:
    """Candidate embeddings and what is known of them (no values from an embeddings file of this model)."""
    if str(source).endswith(".safetensors"):
        saved = read_embeddings(source)
        if saved.modality != modality:
            raise PolyalignError(f"{source} holds {shown(saved.modality)} embeddings, not {modality!r}")
        check_same_model(saved.metadata, model, source)
        if saved.embeddings.shape[1] != model.embed_dim:
            raise PolyalignError(f"{source} holds embeddings of {saved.embeddings.shape[1]} numbers; this model's "
                                 f"have {model.embed_dim}")
        return saved.embeddings.to(model.device), Candidates(saved.ids)
    embeddings, found = embed_source(model, modality, source, batch_size)
    return embeddings, Candidates.of(found)


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
    bank, candidates = candidate_bank(model, modality, source, batch_size)
    ids = candidates.ids
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


def index_candidates(found: IndexFile, modality: str) -> Candidates:
    """What is known of an index's candidates: its ids, and their raw values and labels read (not
    embedded) from the source it was built from when that is a folder, manifest or text file still on
    this machine."""
    source = str(found.metadata.get("input", ""))
    if not source or source.endswith((".safetensors", ".npy")) or not Path(source).exists():
        return Candidates(found.ids)
    try:
        given = read_source(source, modality)
    except PolyalignError:
        return Candidates(found.ids)
    rows = {str(i): r for r, i in enumerate(given.ids)}
    at = [rows.get(str(i)) for i in found.ids]
    values = [None if r is None else given.values[r] for r in at]
    labels = None if given.labels is None else [None if r is None else given.labels[r] for r in at]
    return Candidates(found.ids, values, given.root, labels, same_value_rows(values, given.root))


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


def show_value(value: Any) -> str:
    """A short printable form of a raw value (arrays as plain lists of numbers)."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        value = np.asarray(value).round(4).tolist()
    return describe_value(value)


@dataclass
class SearchResult:
    """The ranked candidates of one query tuple (each value once: :func:`distinct_hits`), and what
    is known of them."""

    target: str
    query: dict[str, Any]
    hits: list[Hit]
    n_candidates: int
    candidates: Candidates


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
    if top_k < 1:
        raise PolyalignError(f"top_k must be at least 1, got {top_k}")
    embedded = model.embed({m: [v] for m, v in query.items()})
    if source.endswith(SUFFIX):
        found = open_index(model, target, source)
        candidates = index_candidates(found, target)
        hits = rank_in_index(model, embedded, target, found, top_k + candidates.repeats)[0]
    else:
        bank, candidates = candidate_bank(model, target, source)
        hits = rank_hits(model.score_embeddings(embedded, bank, target), top_k + candidates.repeats,
                         candidates.ids)[0]
    return SearchResult(target, query, distinct_hits(hits, top_k, candidates), len(candidates.ids), candidates)
