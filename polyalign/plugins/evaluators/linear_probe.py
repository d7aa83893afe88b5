"""Evaluator ``linear_probe``: logistic regression (scikit-learn) on the model's frozen embeddings.

The features of a row are the embeddings of one modality, or of several concatenated (default:
each modality alone, then all of them together). A classifier of the rows' ``label`` is fitted
on the train split (rows that have every feature modality); its inverse regularisation ``C`` is
the one of ``cs`` with the best accuracy on the val split; it is scored on the evaluated split.
Few-shot probes (``shots: [1, 5, ...]``) fit on k train rows per class drawn at random (``draws``
times, seeded; C chosen on val as above) and report the mean over the draws.

Rows: ``task: linear_probe``, ``target: class``, ``query`` (the feature modalities, sorted),
``shots`` (``all`` or k), metrics ``accuracy`` and ``mean_per_class_accuracy``, with ``n`` (rows
scored) and, for the full-data probe with several ``cs``, the metric ``chosen_C`` (the C picked on
val: a result, so a metric row and not a field that would tell rows apart). Beside ``zero_shot_classification`` rows
of the same query they show what the embeddings hold against what the prompts reach.

Needs scikit-learn: ``pip install 'polyalign[probe]'``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from polyalign.plugin import EvalContext, PolyalignError

from .zero_shot import rows_with

TASK = "linear_probe"
TARGET = "class"


class LinearProbeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    features: list[list[str]] | None = Field(
        None, description="modality sets whose embeddings are concatenated (default: each alone, then all)")
    cs: list[float] = Field(default_factory=lambda: [0.001, 0.01, 0.1, 1.0, 10.0, 100.0],
                            description="inverse regularisation strengths tried; the best on val is kept")
    shots: list[int] = Field(default_factory=list, description="few-shot probes: k train rows per class")
    draws: int = Field(3, ge=1, description="random draws of the few-shot rows, averaged")
    max_iter: int = Field(1000, ge=1, description="iterations of the solver (lbfgs)")
    seed: int | None = Field(None, description="seed of the few-shot draws (default: the recipe's seed)")

    @field_validator("cs")
    @classmethod
    def _positive_cs(cls, cs: list[float]) -> list[float]:
        if not cs or any(c <= 0 for c in cs):
            raise ValueError(f"cs must be a non-empty list of positive numbers, got {cs}")
        return sorted(cs)

    @field_validator("shots")
    @classmethod
    def _positive_shots(cls, shots: list[int]) -> list[int]:
        if any(k < 1 for k in shots):
            raise ValueError(f"shots must be k >= 1, got {shots}")
        return sorted(set(shots))


def labelled_features(ctx: EvalContext, split: str, modalities: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)``: concatenated embeddings and labels of the rows of ``split`` that have every
    one of ``modalities`` and a label."""
    samples = ctx.parts.dataset.split(split)
    if len(samples) == 0:
        return np.empty((0, 0)), np.empty(0)
    emb, present = ctx.embeddings(split)
    labelled = torch.tensor([s.get("label") is not None for s in samples])
    rows = (rows_with(present, modalities) & labelled).nonzero(as_tuple=True)[0]
    x = torch.cat([emb[m][rows] for m in modalities], 1).double().numpy()
    return x, np.array([samples[i]["label"] for i in rows.tolist()])


def few_shot_rows(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k rows of each class drawn without replacement (all of a class that has fewer)."""
    picks = [rng.choice(np.flatnonzero(y == c), size=min(k, int((y == c).sum())), replace=False)
             for c in np.unique(y)]
    return np.sort(np.concatenate(picks))


class LinearProbe:
    """Logistic regression (scikit-learn) on frozen embeddings of a modality or several; C chosen on val; few-shot k
    per class

    Logistic-regression probes of the frozen embeddings, full and few-shot."""

    name = "linear_probe"
    Options = LinearProbeConfig
    requires = {"sklearn": "polyalign[probe]"}

    def __init__(self, config: LinearProbeConfig):
        self.config = config

    def feature_sets(self, ctx: EvalContext) -> list[list[str]]:
        names = ctx.modalities
        if self.config.features is None:
            return [[m] for m in names] + ([list(names)] if len(names) > 1 else [])
        for features in self.config.features:
            bad = [m for m in features if m not in names]
            if bad or not features:
                raise PolyalignError(f"linear_probe features {features}: each entry is a non-empty list of the "
                                     f"model's modalities ({', '.join(names)})")
        return [list(f) for f in self.config.features]

    def fit(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray) -> tuple[Any, float]:
        """The classifier with the best val accuracy over ``cs`` (the smaller C on a tie) and its C."""
        from sklearn.linear_model import LogisticRegression

        if len(np.unique(y)) < 2:
            raise PolyalignError(f"linear_probe: the train rows hold a single class ({y[0]!r}); a probe needs two")
        models = [LogisticRegression(C=c, max_iter=self.config.max_iter).fit(x, y) for c in self.config.cs]
        best = 0 if len(models) == 1 else int(np.argmax([(m.predict(x_val) == y_val).mean() for m in models]))
        return models[best], self.config.cs[best]

    def __call__(self, ctx: EvalContext) -> list[dict[str, Any]]:
        try:
            from threadpoolctl import threadpool_limits  # a dependency of scikit-learn
        except ImportError:
            raise PolyalignError("linear_probe needs scikit-learn: pip install 'polyalign[probe]'") from None
        # The fits are small: one BLAS thread is fastest, and spinning threads on a busy machine
        # made them up to 80x slower (measured on 2 shared cores).
        with threadpool_limits(limits=1):
            return self.probe_rows(ctx)

    def probe_rows(self, ctx: EvalContext) -> list[dict[str, Any]]:
        """The rows of every feature set: the full probe, then each few-shot one."""
        from sklearn.metrics import balanced_accuracy_score

        cfg = self.config
        rng = np.random.default_rng(cfg.seed if cfg.seed is not None else ctx.seed)
        out: list[dict[str, Any]] = []
        for features in self.feature_sets(ctx):
            x, y = labelled_features(ctx, "train", features)
            x_test, y_test = labelled_features(ctx, ctx.split, features)
            if len(y) == 0 or len(y_test) == 0:
                continue
            x_val, y_val = labelled_features(ctx, "val", features)
            if len(cfg.cs) > 1 and len(y_val) == 0:
                raise PolyalignError(f"linear_probe chooses C on the val split, which has no labelled rows with "
                                     f"{'+'.join(features)}; give a single value, e.g. cs: [1.0]")
            base = {"task": TASK, "target": TARGET, "query": sorted(features), "n": len(y_test)}

            def scores(model: Any) -> tuple[float, float]:
                predicted = model.predict(x_test)
                return float((predicted == y_test).mean()), float(balanced_accuracy_score(y_test, predicted))

            model, c = self.fit(x, y, x_val, y_val)
            accuracy, per_class = scores(model)
            out += [{**base, "shots": "all", "metric": "accuracy", "value": accuracy},
                    {**base, "shots": "all", "metric": "mean_per_class_accuracy", "value": per_class}]
            if len(cfg.cs) > 1:  # a choice was made: its result
                out.append({**base, "shots": "all", "metric": "chosen_C", "value": float(c)})
            for k in cfg.shots:
                draws = [scores(self.fit(x[rows], y[rows], x_val, y_val)[0])
                         for rows in (few_shot_rows(y, k, rng) for _ in range(cfg.draws))]
                out += [{**base, "shots": k, "metric": "accuracy", "value": float(np.mean([d[0] for d in draws]))},
                        {**base, "shots": k, "metric": "mean_per_class_accuracy",
                         "value": float(np.mean([d[1] for d in draws]))}]
        return out
