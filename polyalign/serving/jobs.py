"""The model's work for a batch of requests: embed every value in one pass per modality, then rank
each search query against its candidates (with the run's scoring rule, through ``polyalign.inference``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from polyalign.core.errors import PolyalignError
from polyalign.inference.trained import Hit, TrainedModel, refuse_nonfinite

from .candidates import CandidateSet, rank_tuples


@dataclass
class Job:
    """One request: raw values by modality; for a search also the target modality (or modalities,
    for candidate tuples) and how many hits."""

    values: dict[str, list[Any]]
    target: tuple[str, ...] | None = None
    top_k: int = 0


@dataclass
class Done:
    """A request's embeddings (CPU) and, for a search, its hits."""

    embeddings: dict[str, torch.Tensor]
    hits: list[Hit] | None = None


def embed_jobs(model: TrainedModel, jobs: list[Job]) -> list[dict[str, torch.Tensor]]:
    """Every job's embeddings, from one ``model.embed`` call over all jobs' values of each modality."""
    modalities = list(dict.fromkeys(m for job in jobs for m in job.values))
    joined = {m: [v for job in jobs for v in job.values.get(m, [])] for m in modalities}
    embedded = model.embed(joined, root=None)
    out: list[dict[str, torch.Tensor]] = [{} for _ in jobs]
    start = dict.fromkeys(modalities, 0)
    for i, job in enumerate(jobs):
        for m, values in job.values.items():
            out[i][m] = embedded[m][start[m]:start[m] + len(values)]
            start[m] += len(values)
    return out


def embed_each(model: TrainedModel, jobs: list[Job]) -> list[dict[str, torch.Tensor] | Exception]:
    """The jobs' embeddings in one pass, or, when that fails (a bad value in one request), each job's
    own embeddings or error: one request's bad value never fails another's."""
    try:
        return list(embed_jobs(model, jobs))
    except PolyalignError:
        if len(jobs) == 1:
            raise
    results: list[dict[str, torch.Tensor] | Exception] = []
    for job in jobs:
        try:
            results.append(embed_jobs(model, [job])[0])
        except PolyalignError as exc:
            results.append(exc)
    return results


def rank_jobs(model: TrainedModel, candidates: dict[str, CandidateSet], jobs: list[Job],
              embedded: list[dict[str, torch.Tensor]]) -> list[list[Hit]]:
    """Hits of search jobs sharing one target and one set of query modalities, ranked together."""
    target = jobs[0].target
    assert target is not None
    queries = {m: torch.cat([z[m] for z in embedded]) for m in embedded[0]}
    top_k = max(job.top_k for job in jobs)
    if len(target) == 1:
        hits = candidates[target[0]].rank(model, queries, top_k)
    else:
        hits = rank_tuples(model, [candidates[m] for m in target], queries, top_k)
    return [row[:job.top_k] for row, job in zip(hits, jobs)]


def run_jobs(model: TrainedModel, candidates: dict[str, CandidateSet], jobs: list[Job]) -> list[Done | Exception]:
    """Each job's result or error (a :class:`PolyalignError` for a bad value or query)."""
    embedded = embed_each(model, jobs)
    results: list[Done | Exception] = [z if isinstance(z, Exception) else Done({m: t.cpu() for m, t in z.items()})
                                       for z in embedded]
    groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[int]] = {}
    for i, (job, done) in enumerate(zip(jobs, results)):
        if isinstance(done, Done):
            if job.target is None:
                for m, z in done.embeddings.items():
                    try:
                        refuse_nonfinite(f"modality {m!r}", z)
                    except PolyalignError as exc:
                        results[i] = exc
            else:
                groups.setdefault((job.target, tuple(sorted(job.values))), []).append(i)
    for rows in groups.values():
        try:
            ranked: list[list[Hit] | Exception] = list(
                rank_jobs(model, candidates, [jobs[i] for i in rows], [embedded[i] for i in rows]))
        except PolyalignError:
            ranked = [rank_alone(model, candidates, jobs[i], embedded[i]) for i in rows]
        for i, hits in zip(rows, ranked):
            done = results[i]
            assert isinstance(done, Done)
            results[i] = hits if isinstance(hits, Exception) else Done(done.embeddings, hits)
    return results


def rank_alone(model: TrainedModel, candidates: dict[str, CandidateSet], job: Job,
               embedded: dict[str, torch.Tensor]) -> list[Hit] | Exception:
    """One search job's hits, or its error (a NaN embedding fails its own query, not the others)."""
    try:
        return rank_jobs(model, candidates, [job], [embedded])[0]
    except PolyalignError as exc:
        return exc
