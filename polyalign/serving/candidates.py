"""What ``/search`` ranks: candidate sets given to ``polyalign serve`` (a source embedded once at start,
or a faiss index), and the server's own files behind their values (thumbnails, audio, text)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from polyalign.core.errors import PolyalignError
from polyalign.inference.search import (
    Candidates,
    candidate_bank,
    check_index_serves,
    distinct_hits,
    index_candidates,
    open_index,
    rank_in_index,
)
from polyalign.inference.sources import split_assignment
from polyalign.inference.trained import Hit, TrainedModel, rank_hits
from polyalign.inference.vector_index import SUFFIX, IndexFile

# files the page may show, by extension: a candidate's file outside this list is never sent
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".webp": "image/webp", ".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg",
               ".ogg": "audio/ogg", ".txt": "text/plain; charset=utf-8"}


@dataclass
class CandidateSet:
    """Candidates of one modality: what is known of them (ids; values, labels where known) and either
    their embeddings (ranked exactly with the run's score) or a faiss index (ranked by it, scored with
    the run's score)."""

    modality: str
    source: str
    known: Candidates
    bank: torch.Tensor | None = None
    index: IndexFile | None = None

    @property
    def ids(self) -> list[Any]:
        return self.known.ids

    @property
    def values(self) -> list[Any] | None:
        return self.known.values

    def rank(self, model: TrainedModel, queries: dict[str, torch.Tensor], top_k: int) -> list[list[Hit]]:
        """The ``top_k`` candidates of each embedded query tuple (one row of each ``queries[m]``), each
        value once (:func:`~polyalign.inference.search.distinct_hits`)."""
        fetch = top_k + self.known.repeats
        if self.index is not None:
            ranked = rank_in_index(model, queries, self.modality, self.index, fetch)
        else:
            assert self.bank is not None
            ranked = rank_hits(model.score_embeddings(queries, self.bank, self.modality), fetch, self.ids)
        return [distinct_hits(hits, top_k, self.known) for hits in ranked]

    def media_file(self, row: int) -> Path | None:
        """The server's file holding candidate ``row`` when it is one the page can show, else None."""
        values, root = self.known.values, self.known.root
        if values is None or not 0 <= row < len(values):
            return None
        value = values[row]
        if not isinstance(value, Path) or value.suffix.lower() not in MEDIA_TYPES:
            return None
        path = value if value.is_absolute() or root is None else root / value
        return path if path.is_file() else None

    def describe(self) -> dict[str, Any]:
        """What ``/info`` says of this set."""
        kind = "exact" if self.index is None else str(self.index.metadata.get("kind", "index"))
        return {"modality": self.modality, "count": len(self.ids), "distinct": len(self.ids) - self.known.repeats,
                "source": self.source, "ranking": kind}


def rank_tuples(model: TrainedModel, sets: list[CandidateSet], queries: dict[str, torch.Tensor],
                top_k: int) -> list[list[Hit]]:
    """The ``top_k`` candidate tuples (row c of every set together) of each embedded query tuple."""
    first = sets[0]
    for other in sets[1:]:
        if other.index is not None or first.index is not None or other.ids != first.ids:
            raise PolyalignError(f"candidate tuples of {', '.join(s.modality for s in sets)} need the same "
                                 f"candidates in each modality, embedded (not an index): start the server with "
                                 f"--candidates M=SOURCE for each, from one manifest")
    banks = {s.modality: s.bank for s in sets}
    return rank_hits(model.score_embedded_tuples(queries, banks), top_k, first.ids)  # type: ignore[arg-type]


def load_candidates(model: TrainedModel, given: list[str], indexes: list[str]) -> dict[str, CandidateSet]:
    """Candidate sets from ``--candidates M=SOURCE`` (embedded now) and ``--index M=FILE.faiss``."""
    sets: dict[str, CandidateSet] = {}
    for option, items in (("--candidates", given), ("--index", indexes)):
        for item in items:
            modality, source = split_assignment(item, option)
            model.check_modality(modality)
            if modality in sets:
                raise PolyalignError(f"{option} {item}: candidates of {modality!r} are given twice; give one "
                                     f"source or index per modality")
            if option == "--index":
                if not source.endswith(SUFFIX):
                    raise PolyalignError(f"--index {item}: an index file ends in {SUFFIX} (written by "
                                         f"`polyalign index`); give other sources with --candidates")
                check_index_serves(model, modality)
                found = open_index(model, modality, source)
                sets[modality] = CandidateSet(modality, source, index_candidates(found, modality), index=found)
            else:
                bank, known = candidate_bank(model, modality, source)
                sets[modality] = CandidateSet(modality, source, known, bank=bank)
    return sets
