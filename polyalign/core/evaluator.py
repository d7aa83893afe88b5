"""The evaluator contract: what an evaluator gets (:class:`EvalContext`), the rows it returns,
and the ranking metrics the built-in evaluators share."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from polyalign.files.json_file import JsonError, read_json

from .assemble import Assembled
from .data import EpochSampler, Sample, make_loader, skip_summary
from .encoder import FileBytes
from .errors import PolyalignError, shown
from .loss import score_candidates
from .report_table import pivot_rows

ROW_KEYS = ("task", "target", "query", "metric", "value")
NUMBER_KEYS = ("value", "ci_low", "ci_high", "chance", "rate")
"""Row keys that hold a number whenever they are present (tables and plots compute with them)."""


@dataclass
class EvalContext:
    """What an evaluator gets: the trained parts, one split, and cached embeddings."""

    parts: Assembled
    split: str
    device: torch.device
    batch_size: int = 256
    seed: int = 0
    ranks: list[dict[str, Any]] | None = None  # per-query ranks recorded by the evaluators, when asked for
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def record_ranks(self, task: str, target: str, query: list[str], rows: torch.Tensor, ranks: torch.Tensor,
                     candidates: int) -> None:
        """Keep the rank of the right candidate for each query row of the split (when ``ranks`` is a
        list): ``polyalign compare --paired`` tests two runs on the same tuples with them."""
        if self.ranks is not None:
            self.ranks.append({"task": task, "target": target, "query": sorted(query), "split": self.split,
                               "candidates": int(candidates), "tuples": [int(i) for i in rows.tolist()],
                               "ranks": [int(r) for r in ranks.tolist()]})

    @property
    def samples(self) -> Sequence[Sample]:
        return self.parts.samples(self.split)

    @property
    def modalities(self) -> list[str]:
        return self.parts.model.modalities

    def embeddings(self, split: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(embeddings, present)`` for every sample of ``split`` (default: the one evaluated; a
        linear probe also fits on ``train`` and ``val``), CPU float32, computed once per split."""
        split = split or self.split
        key = "emb" if split == self.split else f"emb:{split}"
        if key not in self._cache:
            self._cache[key] = embed_split(self.parts, split, self.device, self.batch_size)
        return self._cache[key]

    def embed_values(self, modality: str, values: Sequence[Any]) -> torch.Tensor:
        """Raw values of ``modality`` (e.g. class prompts for the text encoder) embedded by the
        model -> ``(N, E)`` CPU float32; relative paths resolve against the dataset's root."""
        return self.parts.model.embed_values(modality, values, self.parts.dataset.root, self.device,
                                             self.batch_size).float().cpu()

    def score(self, queries: dict[str, torch.Tensor], candidates: torch.Tensor, target: str) -> torch.Tensor:
        """The loss's scores ``(Q, C)`` of the candidates of ``target``, checked for shape and NaN."""
        return self.score_tuples(queries, {target: candidates})

    @torch.no_grad()
    def score_tuples(self, queries: dict[str, torch.Tensor], candidates: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss's scores ``(Q, C)`` of candidates made of one or more modalities, checked."""
        return score_candidates(self.parts.loss, queries, candidates,
                                self.parts.loss_name or type(self.parts.loss).__name__)


@torch.no_grad()
def embed_split(parts: Assembled, split: str, device: torch.device,
                batch_size: int = 256) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Embed every sample of ``split``: ``(embeddings[m] (N, E), present[m] (N,))`` on CPU."""
    data = parts.tuples(split)
    loader = make_loader(data, parts.collator(), batch_size, EpochSampler(len(data), 0, shuffle=False))
    model = parts.model
    was_training = model.training
    model.eval()
    embs: dict[str, list[torch.Tensor]] = {m: [] for m in model.modalities}
    pres: dict[str, list[torch.Tensor]] = {m: [] for m in model.modalities}
    for batch in loader:
        batch = batch.to(device)
        out = model(batch.inputs, batch.present)
        for m in model.modalities:
            embs[m].append(out[m].float().cpu())
            pres[m].append(batch.present[m].cpu())
    model.train(was_training)
    skipped = data.take_skipped()  # data.on_error=skip: those rows count as absent
    if skipped:
        warnings.warn(skip_summary(split, skipped), stacklevel=2)
    if not len(data):  # an empty split: no rows, nothing to rank
        return ({m: torch.empty(0, model.embed_dim) for m in model.modalities},
                {m: torch.empty(0, dtype=torch.bool) for m in model.modalities})
    return ({m: torch.cat(v) for m, v in embs.items()}, {m: torch.cat(v) for m, v in pres.items()})


def ranks_of_correct(scores: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """1-based rank of the best-scored correct candidate per query (ties count against it)."""
    neg_inf = torch.finfo(scores.dtype).min
    best = torch.where(correct, scores, torch.full_like(scores, neg_inf)).max(dim=1, keepdim=True).values
    rivals = (~correct) & (scores >= best)
    return rivals.sum(dim=1) + 1


def per_query_metrics(ranks: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, torch.Tensor]:
    """Per-query hits at each k (``accuracy`` for k = 1, ``top5``...) and reciprocal rank (``mrr``), float64."""
    ranks = ranks.double()
    out = {("accuracy" if k == 1 else f"top{k}"): (ranks <= k).double() for k in ks}
    out["mrr"] = 1.0 / ranks
    return out


def retrieval_metrics(ranks: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy (``accuracy`` for k = 1, ``top5``...) and MRR from ranks."""
    return {name: float(v.mean()) for name, v in per_query_metrics(ranks, ks).items()}


def recall_and_rank(ranks: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Retrieval's summary of ranks: ``R@k`` (share of queries with a correct candidate in the
    top k), ``median_rank`` (the middle two averaged) and ``mean_rank`` of the best correct candidate."""
    ranks = ranks.double()
    out = {f"R@{k}": float((ranks <= k).double().mean()) for k in ks}
    out["median_rank"] = float(ranks.quantile(0.5))
    out["mean_rank"] = float(ranks.mean())
    return out


def value_key(value: Any) -> Any:
    """A hashable key for a raw value (to find the distinct candidates of a split)."""
    if isinstance(value, (str, Path, int, float, bool)):
        return value
    if isinstance(value, FileBytes):  # a shard member: the same bytes are the same candidate
        return value.data
    arr = np.asarray(value)
    return (arr.dtype.str, arr.shape, arr.tobytes())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def row_problem(row: Any) -> str | None:
    """Why ``row`` is not an evaluation row (``task``, ``target``, ``metric`` text, ``query`` a list of
    text, ``value`` and the other :data:`NUMBER_KEYS` numbers), or None."""
    if not isinstance(row, dict):
        return f"a row must be a mapping, got {type(row).__name__}"
    for key in ("task", "target", "metric"):
        if not isinstance(row.get(key), str):
            return f"{key!r} must be text, got {shown(row.get(key))}"
    if not isinstance(row.get("query"), list) or not all(isinstance(q, str) for q in row["query"]):
        return f"'query' must be a list of modality names, got {shown(row.get('query'))}"
    bad = next((k for k in NUMBER_KEYS if (k in row or k == "value") and not _is_number(row.get(k))), None)
    return f"{bad!r} must be a number, got {shown(row.get(bad))}" if bad else None


def read_report(path: Path, missing_ok: bool = False) -> list[dict[str, Any]]:
    """The rows of a run's ``eval/report.json``, each checked with :func:`row_problem`
    (``missing_ok``: no file is no rows)."""
    path = Path(path)
    if missing_ok and not path.is_file():
        return []
    redo = f"run `polyalign eval {path.parent.parent}` to write it again"
    try:
        rows = read_json(path, "evaluation report", max_bytes=64 << 20)
    except JsonError as exc:
        raise PolyalignError(f"{exc}; {redo}") from None
    if not isinstance(rows, list):
        raise PolyalignError(f"{path} must hold a list of evaluation rows, got {type(rows).__name__}; {redo}")
    for i, row in enumerate(rows):
        problem = row_problem(row)
        if problem:
            raise PolyalignError(f"{path}, row {i}: {problem}; {redo}")
    return rows


def row_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The columns of a table of evaluator rows: the row keys, then any others (ci_low, ...) sorted; keys
    holding lists or mappings (a confusion matrix, prompts) stay out of tables (report.json keeps them)."""
    return list(ROW_KEYS) + sorted({k for r in rows for k, v in r.items() if not isinstance(v, (list, dict))}
                                   - set(ROW_KEYS))


def eval_tag(row: dict[str, Any], split: str) -> str:
    """A metric name for an evaluator row, e.g. ``eval/test/zero_shot/b_from_a+c/accuracy``."""
    query = "+".join(row.get("query") or [])
    parts = [str(row.get("task", "eval")), f"{row.get('target')}_from_{query}", str(row.get("metric"))]
    return "/".join(["eval", split] + [re.sub(r"\s+", "_", p) for p in parts])


def report_sections(rows: list[dict[str, Any]], level: str = "##") -> list[str]:
    """Markdown lines: a section per task (evaluator) in the order the rows come, each a table with only
    that task's columns (a line per target, query, ...; a column per metric, the evaluator's first, its
    headline, leftmost) and a caption of the counts that are the same on every line."""
    out: list[str] = []
    for table in pivot_rows(rows):
        out += ["", f"{level} {table.task}", ""]
        if table.caption():
            out += [table.caption(), ""]
        out += ["| " + " | ".join(table.header) + " |", "|" + "---|" * len(table.header)]
        out += ["| " + " | ".join(line) + " |" for line in table.lines]
    return out


def report_markdown(rows: list[dict[str, Any]], title: str = "Evaluation", notes: Sequence[str] = (),
                    headline: str = "") -> str:
    """The rows as Markdown: ``headline`` (a sentence) first, then a section per task with only its
    columns (:func:`report_sections`), then ``notes`` (e.g. why an evaluator produced no rows)."""
    noted = "".join(f"\n- {n}" for n in notes)
    if not rows:
        return f"# {title}\n\n" + (f"No evaluator produced rows:\n{noted}\n" if notes
                                    else "No evaluators in the recipe.\n")
    lines = [f"# {title}"] + (["", headline] if headline else []) + report_sections(rows)
    return "\n".join(lines) + "\n" + (f"\nNotes:\n{noted}\n" if notes else "")
