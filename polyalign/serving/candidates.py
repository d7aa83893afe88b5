"""What ``/search`` ranks: candidate sets given to ``polyalign serve`` (a source embedded once at start,
or a faiss index), and the server's own files behind their values (thumbnails, audio, text)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from polyalign.core.errors import PolyalignError
from polyalign.inference.search import candidate_bank, check_index_serves, open_index, rank_in_index
from polyalign.inference.sources import read_source, split_assignment
from polyalign.inference.trained import Hit, TrainedModel, rank_hits
from polyalign.inference.vector_index import SUFFIX, IndexFile

# files the page may show, by extension: a candidate's file outside this list is never sent
MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".webp": "image/webp", ".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg",
               ".ogg": "audio/ogg", ".txt": "text/plain; charset=utf-8"}


@dataclass
class CandidateSet:
    """Candidates of one modality: their ids, raw values (where known) and either their embeddings
    (ranked exactly with the run's score) or a faiss index (ranked by it, scored with the run's score)."""

    modality: str
    source: str
    ids: list[Any]
    values: list[Any] | None
    root: Path | None
    bank: torch.Tensor | None = None
    index: IndexFile | None = None

    def rank(self, model: TrainedModel, queries: dict[str, torch.Tensor], top_k: int) -> list[list[Hit]]:
        """The ``top_k`` candidates of each embedded query tuple (one row of each ``queries[m]``)."""
        if self.index is not None:
            return rank_in_index(model, queries, self.modality, self.index, top_k)
        assert self.bank is not None
        return rank_hits(model.score_embeddings(queries, self.bank, self.modality), top_k, self.ids)

    def media_file(self, row: int) -> Path | None:
        """The server's file holding candidate ``row`` when it is one the page can show, else None."""
        if self.values is None or not 0 <= row < len(self.values):
            return None
        value = self.values[row]
        if not isinstance(value, str) or Path(value).suffix.lower() not in MEDIA_TYPES:
            return None
        path = Path(value) if Path(value).is_absolute() or self.root is None else self.root / value
        return path if path.is_file() else None

    def describe(self) -> dict[str, Any]:
        """What ``/info`` says of this set."""
        kind = "exact" if self.index is None else str(self.index.metadata.get("kind", "index"))
        return {"modality": self.modality, "count": len(self.ids), "source": self.source, "ranking": kind}


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


def index_values(found: IndexFile, modality: str) -> tuple[list[Any] | None, Path | None]:
    """The raw values behind an index's ids, read (not embedded) from the source it was built from
    when that is a folder, manifest or text file still on this machine; else None."""
    source = str(found.metadata.get("input", ""))
    if not source or source.endswith((".safetensors", ".npy")) or not Path(source).exists():
        return None, None
    try:
        given = read_source(source, modality)
    except PolyalignError:
        return None, None
    by_id = {str(i): v for i, v in zip(given.ids, given.values)}
    return [by_id.get(str(i)) for i in found.ids], given.root


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
                values, root = index_values(found, modality)
                sets[modality] = CandidateSet(modality, source, found.ids, values, root, index=found)
            else:
                bank, ids, values, root = candidate_bank(model, modality, source)
                sets[modality] = CandidateSet(modality, source, ids, values, root, bank=bank)
    return sets
