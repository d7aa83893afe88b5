"""Index files for ``polyalign index``: a faiss inner-product index plus a JSON file of ids and provenance.

``FILE.faiss`` is a plain faiss index (``faiss.read_index`` opens it); ``FILE.faiss.json`` beside
it holds the candidates' ids, the model that embedded them, the index options, the measured
recall and the SHA-256 of the index file, which is checked before faiss reads a byte of it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from polyalign.core.errors import PolyalignError, not_a_file, shown
from polyalign.files.atomic import atomic_write_bytes, atomic_write_text
from polyalign.files.json_file import read_json

from .sources import check_ids

FORMAT = "polyalign.index/1"
SUFFIX = ".faiss"
IndexKind = Literal["flat", "ivf", "hnsw"]
RECALL_K = 10
RECALL_QUERIES = 1000


def import_faiss() -> Any:
    """The faiss module, or an error saying how to install it."""
    try:
        import faiss
    except ImportError as exc:
        raise PolyalignError(f"an index needs the faiss package ({exc}); install it with "
                             f"`pip install faiss-cpu` (or `pip install 'polyalign[index]'`)") from None
    return faiss


def sidecar(path: str | Path) -> Path:
    """``FILE.faiss.json``: the ids and provenance of ``FILE.faiss``."""
    return Path(f"{path}.json")


OPTION_RANGES = {
    "nlist": (1, 1 << 24, "clusters; at most one per indexed vector"),
    "nprobe": (1, 1 << 16, "clusters searched per query; more than nlist searches them all"),
    "hnsw_m": (2, 256, "links per vector; each vector stores 2 x M of them, faiss advises 4 to 64, "
                       "and below 2 faiss crashes"),
    "ef_search": (1, 1 << 16, "candidates kept per query; past a few thousand it is an exhaustive search"),
}
"""(lowest, highest, what it is) of each numeric index option."""


@dataclass(frozen=True)
class IndexOptions:
    """How to index: ``flat`` is exact; ``ivf`` probes ``nprobe`` of ``nlist`` clusters; ``hnsw``
    walks a graph of ``hnsw_m`` links per vector with a candidate list of ``ef_search``."""

    kind: IndexKind = "flat"
    nlist: int | None = None
    nprobe: int = 16
    hnsw_m: int = 32
    ef_search: int = 64

    def check(self) -> None:
        """Refuse options that cannot build an index, naming the command-line option and its range."""
        for name in ("nprobe", "hnsw_m", "ef_search") + (("nlist",) if self.nlist is not None else ()):
            low, high, why = OPTION_RANGES[name]
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise PolyalignError(f"--{name.replace('_', '-')} must be a whole number from {low} to {high} "
                                     f"({why}), got {shown(value)}")


def default_nlist(n: int) -> int:
    """About 4·√N clusters, with at least 39 training vectors per cluster (faiss's advice)."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def build_index(vectors: np.ndarray, options: IndexOptions) -> Any:
    """A faiss inner-product index holding ``vectors`` ``(N, d)`` (float32, row i = id i)."""
    faiss = import_faiss()
    options.check()
    n, d = vectors.shape
    if n == 0:
        raise PolyalignError("no vectors to index")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if options.kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif options.kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, options.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = options.ef_search
    else:
        if n < 39:
            raise PolyalignError(f"an ivf index clusters its vectors (39 or more per cluster); {n} vectors are "
                                 f"too few: use --kind flat, exact and fast at this size")
        nlist = options.nlist or default_nlist(n)
        if nlist > n:
            raise PolyalignError(f"--nlist {nlist} is more clusters than the {n} vectors to index")
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(options.nprobe, nlist)
    index.add(vectors)
    return index


def index_settings(index: Any, options: IndexOptions) -> dict[str, Any]:
    """The kind of an index built by :func:`build_index` and the settings it was built with."""
    if options.kind == "ivf":
        return {"kind": "ivf", "nlist": int(index.nlist), "nprobe": int(index.nprobe)}
    if options.kind == "hnsw":
        return {"kind": "hnsw", "hnsw_m": options.hnsw_m, "ef_search": options.ef_search}
    return {"kind": "flat"}


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row ids of the ``k`` largest inner products of each query (brute force, faiss flat)."""
    faiss = import_faiss()
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return flat.search(np.ascontiguousarray(queries, dtype=np.float32), k)[1]


def recall_at_k(index: Any, vectors: np.ndarray, queries: np.ndarray, k: int = RECALL_K) -> float:
    """Share of the exact top ``k`` (by inner product) that ``index`` also returns in its top ``k``."""
    k = min(k, vectors.shape[0])
    truth = exact_top(vectors, queries, k)
    found = index.search(np.ascontiguousarray(queries, dtype=np.float32), k)[1]
    return float(np.mean([len(set(t) & set(f)) / k for t, f in zip(truth.tolist(), found.tolist())]))


def sample_queries(vectors: np.ndarray, n: int = RECALL_QUERIES, seed: int = 0) -> np.ndarray:
    """Up to ``n`` of the indexed vectors, drawn without replacement: queries to measure recall with."""
    rows = np.random.default_rng(seed).choice(vectors.shape[0], min(n, vectors.shape[0]), replace=False)
    return vectors[np.sort(rows)]


def write_index(path: str | Path, index: Any, ids: list[Any], metadata: dict[str, Any]) -> Path:
    """Write ``path`` (the faiss index) and ``path.json`` (ids, provenance, the index's SHA-256)."""
    faiss = import_faiss()
    path = Path(path)
    if path.suffix != SUFFIX:
        raise PolyalignError(f"--out {path}: an index file must end in {SUFFIX}")
    if len(ids) != index.ntotal:
        raise PolyalignError(f"{len(ids)} ids for {index.ntotal} indexed vectors")
    data = faiss.serialize_index(index).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    meta = {"format": FORMAT, **metadata, "count": int(index.ntotal), "dim": int(index.d),
            "index_sha256": hashlib.sha256(data).hexdigest(), "ids": ids}
    atomic_write_text(sidecar(path), json.dumps(meta) + "\n")
    return path


@dataclass
class IndexFile:
    """An index read back: the faiss index, one id per row, and its provenance (``metadata``)."""

    index: Any
    ids: list[Any]
    metadata: dict[str, Any]

    @property
    def modality(self) -> str:
        """The modality whose embeddings the index holds."""
        return str(self.metadata.get("modality"))

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        """Row ids ``(Q, k)`` of the largest inner products with ``queries`` ``(Q, d)``, best first."""
        k = min(k, len(self.ids))
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)[1]

    def vectors(self, rows: list[int]) -> np.ndarray:
        """The stored vectors of ``rows``."""
        return self.index.reconstruct_batch(np.asarray(rows, dtype=np.int64))


KIND_CLASSES = {"flat": "IndexFlatIP", "ivf": "IndexIVFFlat", "hnsw": "IndexHNSWFlat"}
"""The faiss class :func:`build_index` makes for each kind."""


def check_index(index: Any, meta: dict[str, Any], path: Path) -> None:
    """Refuse a faiss index that is not what its sidecar says (kind, inner-product metric, dimension,
    count), so that it is never searched as something it is not."""
    faiss = import_faiss()
    redo = "build it again with `polyalign index`"
    kind, made = meta.get("kind"), type(faiss.downcast_index(index)).__name__
    if not isinstance(kind, str) or kind not in KIND_CLASSES:
        raise PolyalignError(f"{sidecar(path)}: 'kind' must be one of {', '.join(KIND_CLASSES)}, got {shown(kind)}; "
                             f"{redo}")
    if made != KIND_CLASSES[kind]:
        raise PolyalignError(f"{path} is a faiss {made}, but {sidecar(path).name} says a {kind} index "
                             f"({KIND_CLASSES[kind]}); {redo}")
    if index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise PolyalignError(f"{path} ranks by another metric than the inner product (faiss metric "
                             f"{index.metric_type}), which is not the score of polyalign's embeddings; {redo}")
    for key, value in (("dim", index.d), ("count", index.ntotal)):
        if meta.get(key) != value:
            raise PolyalignError(f"{path} holds {value} {'numbers per vector' if key == 'dim' else 'vectors'}, but "
                                 f"{sidecar(path).name} says {key} {shown(meta.get(key))}; {redo}")
    if index.ntotal != len(meta["ids"]):
        raise PolyalignError(f"{path} holds {index.ntotal} vectors but {sidecar(path).name} {len(meta['ids'])} ids")


def read_index(path: str | Path) -> IndexFile:
    """An index written by :func:`write_index`, checked against its JSON file before faiss reads it."""
    faiss = import_faiss()
    path, meta_path = Path(path), sidecar(path)
    if not path.is_file():
        raise PolyalignError(f"{not_a_file(path)}; build an index with `polyalign index RUN --modality M "
                             f"--input SOURCE --out {path.name}`")
    if not meta_path.exists():
        raise PolyalignError(f"{path} has no {meta_path.name} beside it (the ids and the model that made it); "
                             f"an index for polyalign is the pair written by `polyalign index`")
    meta = read_json(meta_path, "index sidecar")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("ids"), list):
        raise PolyalignError(f"{meta_path} was not written by `polyalign index` (format {FORMAT})")
    check_ids(meta["ids"], f"{meta_path}: 'ids'", "; build the index again with `polyalign index`")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta.get("index_sha256"):
        raise PolyalignError(f"{path} does not match {meta_path.name} (its SHA-256 differs): the index was "
                             f"changed or cut short after it was written; build it again with `polyalign index`")
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as exc:
        raise PolyalignError(f"faiss cannot read {path}: {str(exc).splitlines()[-1]}") from None
    check_index(index, meta, path)
    if meta.get("kind") == "ivf":  # reconstructing a hit's vector needs the id -> list map
        faiss.extract_index_ivf(index).make_direct_map()
    return IndexFile(index, meta.pop("ids"), meta)
