"""Evaluator ``retrieval``: Recall@k, median and mean rank, in both directions, between single
modalities or tuples of them.

Each direction ranks the candidates of its ``target`` (one modality, or several together: text ->
(video, audio)) for queries made of its ``query`` modalities, with the loss's own scoring rule
(``score_tuples`` for tuple candidates). The queries are the rows of the split that have every
query and target modality; the candidates are every row with every target modality
(``candidates: split``, the default) or each distinct target value once (``unique``). A
candidate is correct when it is the query's own row or value (``match: index``) or has the
query's label (``match: label``).

``directions`` lists ``{query, target}`` pairs; by default every modality is retrieved from all
the others, and every pair of modalities from each other. With ``both_ways`` (default) each
direction is also ranked the other way round (all the others, as tuples, from each modality).
A loss that ranks one modality only (no ``score_tuples``) skips the default tuple directions
with a one-line notice, and stops with an error on ones the recipe names.

Rows: ``task: retrieval``, ``target`` (target modalities joined by '+'), ``query`` (sorted),
metrics ``R@k`` for each k of ``top_k`` (share of queries with a correct candidate among the
first k), ``median_rank`` and ``mean_rank`` (1-based rank of the best-ranked correct candidate;
ties count against it), plus ``n`` (queries) and ``candidates``.
"""

from __future__ import annotations

import warnings
from itertools import combinations
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from polyalign.plugin import EvalContext, Notice, PolyalignError, can_rank_tuples, recall_and_rank

from .zero_shot import rank_queries

TASK = "retrieval"


class Direction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: list[str] = Field(min_length=1, description="query modalities (one, or several scored together)")
    target: list[str] = Field(min_length=1, description="target modalities (one, or several: tuple candidates)")

    @field_validator("query", "target", mode="before")
    @classmethod
    def _one_name_is_a_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _disjoint(self) -> "Direction":
        both = sorted(set(self.query) & set(self.target))
        if both:
            raise ValueError(f"{', '.join(both)} is both a query and a target modality")
        return self


class RetrievalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    directions: list[Direction] | None = Field(
        None, description="[{query, target}, ...]; default: each modality from all the others, and each pair")
    both_ways: bool = Field(True, description="also rank each direction the other way round")
    candidates: Literal["unique", "split"] = Field(
        "split", description="split = every row with the target; unique = each distinct target value once")
    match: Literal["index", "label"] = Field(
        "index", description="index = the query's own row (or value) is correct; label = any candidate with its label")
    top_k: list[PositiveInt] = Field(default_factory=lambda: [1, 5, 10], min_length=1,
                                     description="k of the R@k columns")


class Retrieval:
    """Recall@1/5/10, median and mean rank in both directions, between modalities or tuples of them

    Recall@k and ranks of every direction, each both ways."""

    name = "retrieval"
    Options = RetrievalConfig

    def __init__(self, config: RetrievalConfig):
        self.config = config

    def directions(self, ctx: EvalContext) -> list[tuple[list[str], list[str]]]:
        """(query, target) lists to rank, each once, in order."""
        names = ctx.modalities
        if self.config.directions is None:
            named = [([n for n in names if n != m], [m]) for m in names]
            named += [([m], [n]) for m, n in combinations(names, 2)]
        else:
            named = [(d.query, d.target) for d in self.config.directions]
            for query, target in named:
                bad = [m for m in query + target if m not in names]
                if bad:
                    raise PolyalignError(f"retrieval direction {'+'.join(query)} -> {'+'.join(target)}: "
                                         f"{bad[0]!r} is not a modality of the model ({', '.join(names)})")
        out: list[tuple[list[str], list[str]]] = []
        seen: set[tuple[tuple[str, ...], tuple[str, ...]]] = set()
        for query, target in named:
            for q, t in [(query, target), (target, query)] if self.config.both_ways else [(query, target)]:
                key = (tuple(sorted(q)), tuple(sorted(t)))
                if key not in seen:
                    seen.add(key)
                    out.append((list(q), list(t)))
        if self.config.directions is None and not can_rank_tuples(ctx.parts.loss):
            skipped = [t for _, t in out if len(t) > 1]
            if skipped:
                warnings.warn(Notice(f"retrieval: loss {ctx.parts.loss_name or type(ctx.parts.loss).__name__!r} "
                                     f"ranks one modality at a time (tuple_candidates = False), so the tuple targets "
                                     f"{', '.join('+'.join(t) for t in skipped)} are left out"), stacklevel=2)
            out = [(q, t) for q, t in out if len(t) == 1]
        return out

    def __call__(self, ctx: EvalContext) -> list[dict[str, Any]]:
        cfg = self.config
        rows: list[dict[str, Any]] = []
        for query, target in self.directions(ctx):
            found, ranks, n_candidates = rank_queries(ctx, target, query, cfg.candidates, cfg.match)
            if found.numel() == 0:
                continue
            ctx.record_ranks(TASK, "+".join(sorted(target)), query, found, ranks, n_candidates)
            base = {"task": TASK, "target": "+".join(sorted(target)), "query": sorted(query),
                    "n": int(found.numel()), "candidates": n_candidates}
            rows += [{**base, "metric": k, "value": v} for k, v in recall_and_rank(ranks, cfg.top_k).items()]
        return rows
