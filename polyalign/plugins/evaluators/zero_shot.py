"""Evaluator ``zero_shot``: rank candidates of a target modality from query modalities."""

from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field

from polyalign.plugin import EvalContext, PolyalignError, ranks_of_correct, retrieval_metrics, value_key


class ZeroShotConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str = Field(description="modality to predict")
    query: list[str] | None = Field(None, description="query modalities (default: all but the target)")
    candidates: Literal["unique", "split"] = Field(
        "unique", description="unique = each distinct target value once; split = every target in the split")
    match: Literal["index", "label"] = Field(
        "index", description="index = the query's own target is correct; label = any candidate with its label")
    top_k: list[int] = Field(default_factory=lambda: [1, 5], description="k of the top-k accuracies")


def as_list(target: str | Sequence[str]) -> list[str]:
    """A target given as one modality or several (a tuple of candidates) as a list."""
    return [target] if isinstance(target, str) else list(target)


def rows_with(present: dict[str, torch.Tensor], modalities: list[str]) -> torch.Tensor:
    """Mask of the rows where every one of ``modalities`` is present."""
    mask = present[modalities[0]].clone()
    for m in modalities[1:]:
        mask &= present[m]
    return mask


def candidate_set(ctx: EvalContext, target: str | Sequence[str], mode: str, match: str,
                  query_rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate rows of the split (those with every target modality) and the (queries x
    candidates) correctness matrix."""
    targets = as_list(target)
    samples = ctx.samples
    _, present = ctx.embeddings()
    have = rows_with(present, targets).nonzero(as_tuple=True)[0].tolist()

    def value(i: int) -> Any:
        return tuple(value_key(samples[i][t]) for t in targets)

    if match == "label":
        missing = [i for i in have if samples[i].get("label") is None]
        if missing:
            raise PolyalignError(f"match: label needs a label on every sample; row {missing[0]} "
                                 f"of split {ctx.split!r} has none")
        key = lambda i: samples[i]["label"]  # noqa: E731
    else:
        key = value
    if mode == "unique":
        first: dict[Any, int] = {}
        for i in have:
            first.setdefault(value(i), i)
        cand = list(first.values())
    else:
        cand = have
    cand_t = torch.tensor(cand, dtype=torch.long)
    if mode == "split" and match == "index":
        return cand_t, query_rows[:, None] == cand_t[None, :]
    ids: dict[Any, int] = {}  # each distinct key as a small integer, so correctness is one comparison
    cand_ids = torch.tensor([ids.setdefault(key(i), len(ids)) for i in cand], dtype=torch.long)
    query_ids = torch.tensor([ids.setdefault(key(q), len(ids)) for q in query_rows.tolist()], dtype=torch.long)
    return cand_t, query_ids[:, None] == cand_ids[None, :]


def query_embeddings(ctx: EvalContext, target: str | Sequence[str], query: list[str],
                     rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """Query embeddings at ``rows``; a model with learned placeholders (``missing.strategy:
    learned``) also gets its placeholder for every modality neither queried nor a target, as in training."""
    emb, _ = ctx.embeddings()
    return ctx.parts.model.with_placeholders({q: emb[q][rows] for q in query}, as_list(target))


def rank_queries(ctx: EvalContext, target: str | Sequence[str], query: list[str], candidates: str = "unique",
                 match: str = "index", rows_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(query rows, rank of each one's best correct candidate, number of candidates)`` for
    ranking ``target`` (one modality or a tuple) from ``query`` with the loss's score."""
    targets = as_list(target)
    emb, present = ctx.embeddings()
    mask = rows_with(present, targets + list(query))
    if rows_mask is not None:
        mask &= rows_mask
    rows = mask.nonzero(as_tuple=True)[0]
    if rows.numel() == 0:
        return rows, torch.empty(0), 0
    cand, correct = candidate_set(ctx, targets, candidates, match, rows)
    queries = query_embeddings(ctx, targets, query, rows)
    scores = ctx.score_tuples({q: z.to(ctx.device) for q, z in queries.items()},
                              {t: emb[t][cand].to(ctx.device) for t in targets}).float().cpu()
    return rows, ranks_of_correct(scores, correct), int(cand.numel())


def zero_shot_rows(ctx: EvalContext, target: str, query: list[str], candidates: str = "unique",
                   match: str = "index", top_k: list[int] = (1, 5), task: str = "zero_shot",
                   rows_mask: torch.Tensor | None = None) -> tuple[list[dict[str, Any]], torch.Tensor]:
    """Rows for one (target, query) pair and the per-query ranks (for resampling)."""
    rows, ranks, n_candidates = rank_queries(ctx, target, query, candidates, match, rows_mask)
    if rows.numel() == 0:
        return [], ranks
    if rows_mask is None:  # every query row of the split: kept for paired tests between runs
        ctx.record_ranks(task, target, query, rows, ranks, n_candidates)
    metrics = retrieval_metrics(ranks, top_k)
    base = {"task": task, "target": target, "query": sorted(query), "n": int(rows.numel()),
            "candidates": n_candidates}
    return [{**base, "metric": k, "value": v} for k, v in metrics.items()], ranks


class ZeroShot:
    """Predict a target modality from query modalities among candidates; top-k accuracy and MRR

    Zero-shot prediction of ``target`` from ``query`` modalities with the loss's score."""

    name = "zero_shot"
    Options = ZeroShotConfig

    def __init__(self, config: ZeroShotConfig):
        self.config = config

    def __call__(self, ctx: EvalContext) -> list[dict[str, Any]]:
        cfg = self.config
        if cfg.target not in ctx.modalities:
            raise PolyalignError(f"zero_shot target {cfg.target!r} is not a modality of the model "
                                 f"({', '.join(ctx.modalities)})")
        query = cfg.query or [m for m in ctx.modalities if m != cfg.target]
        bad = [q for q in query if q == cfg.target or q not in ctx.modalities]
        if bad:
            raise PolyalignError(f"zero_shot query {bad[0]!r}: a query must be a modality of the model other "
                                 f"than the target {cfg.target!r} (modalities: {', '.join(ctx.modalities)})")
        rows, _ = zero_shot_rows(ctx, cfg.target, query, cfg.candidates, cfg.match, cfg.top_k)
        return rows
