"""Evaluator ``zero_shot_classification``: classify with the text encoder's embeddings of class
prompts, as in the CLIP paper, from any subset of the other modalities.

Every class name is written into every prompt template (``"a photo of a {}"``), the prompts are
embedded by the ``text`` modality and averaged per class (re-normalised to unit length when the
model's embeddings are L2-normalised). A query (one modality, or several scored together with
the loss's own rule, e.g. image + audio) is assigned the classes in order of score against
these class embeddings.

Class names come from ``classes`` (a list, or a file with one name per line), else from the
dataset's ``label_names``, else they are the distinct labels of the split themselves. A sample's
``label`` is the index of its class in that list, or its name. Class names that are integers
(integer labels with no names) are prompted as such ("a photo of a 7"): a :class:`Notice` says so,
once, on the console and in the report.

Rows: ``task: zero_shot_classification``, ``target: class``, ``query`` (sorted); metrics
``accuracy`` (top-1, always; with ``classes`` and the ``confusion`` matrix of counts, a row per
true class and a column per predicted class), ``topK`` for each k of ``top_k`` below the number of
classes, and ``mean_per_class_accuracy``; then one ``accuracy`` row per class (with its ``class``
and the ``prompts`` it was embedded from).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import warnings

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

from polyalign.plugin import EvalContext, Notice, PolyalignError, per_query_metrics, ranks_of_correct

from .zero_shot import query_embeddings, rows_with

TASK = "zero_shot_classification"
TARGET = "class"


class ZeroShotClassificationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field("text", description="the modality that embeds the class prompts")
    classes: list[str] | str | None = Field(
        None, description="class names, or a file with one per line (default: the dataset's label names)")
    templates: list[str] | str = Field(
        default_factory=lambda: ["{}"], description="prompt templates with {} for the class name, or a file "
                                                    "with one per line")
    queries: list[list[str]] | None = Field(
        None, description="query modality subsets (default: each other modality alone, then all together)")
    top_k: list[PositiveInt] = Field(default_factory=lambda: [1, 5], min_length=1,
                                     description="k of the top-k accuracies")

    @field_validator("templates")
    @classmethod
    def _templates_hold_a_slot(cls, templates: list[str] | str) -> list[str] | str:
        if isinstance(templates, list):
            bad = [t for t in templates if t.count("{}") != 1]
            if not templates or bad:
                raise ValueError(f"each template needs exactly one {{}} for the class name, got {bad or templates}")
        return templates


def read_lines(path: str, what: str) -> list[str]:
    """The non-empty lines of a text file (``#`` starts a comment line), for class names or templates."""
    file = Path(path).expanduser()
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise PolyalignError(f"zero_shot_classification {what}: cannot read {file} ({exc.strerror or exc}); give "
                             f"a list in the recipe or a file with one per line (relative to the current "
                             f"folder)") from None
    out = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not out:
        raise PolyalignError(f"zero_shot_classification {what}: {file} holds no lines")
    return out


def class_indices(labels: Sequence[Any], names: list[str], split: str) -> torch.Tensor:
    """Each label's position among ``names`` (an integer label is the position itself)."""
    out = []
    for i, label in enumerate(labels):
        if label is None:
            raise PolyalignError(f"zero_shot_classification needs a label on every sample; row {i} of split "
                                 f"{split!r} has none")
        if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(names):
            out.append(label)
        elif str(label) in names:
            out.append(names.index(str(label)))
        else:
            raise PolyalignError(f"zero_shot_classification: row {i} of split {split!r} has label {label!r}, which "
                                 f"is neither a class number below {len(names)} nor one of the class names "
                                 f"({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})")
    return torch.tensor(out, dtype=torch.long)


def confusion_counts(truth: torch.Tensor, predicted: torch.Tensor, n_classes: int) -> list[list[int]]:
    """``counts[t][p]``: how many queries of true class ``t`` were classified as ``p``."""
    flat = torch.bincount(truth * n_classes + predicted, minlength=n_classes * n_classes)
    return flat.view(n_classes, n_classes).tolist()


def integer_names_note(names: list[str], example: str) -> str | None:
    """The one-line note for class names that are integers (integer labels without names), or None."""
    if not all(n.lstrip("-").isdigit() for n in names):
        return None
    return (f"zero_shot_classification: the class names are the integer labels ({', '.join(names[:3])}, ...), so "
            f"the prompts read {example!r}; give the classes names: label_names on the dataset (the manifest's "
            f"data.label_names), string labels, or the evaluator's classes")


class ZeroShotClassification:
    """Classify from any query subset against text prompts of the class names, averaged per class (CLIP);
    top-1/top-5 and per-class accuracy

    Zero-shot classification from query subsets against averaged prompt embeddings."""

    name = "zero_shot_classification"
    Options = ZeroShotClassificationConfig

    def __init__(self, config: ZeroShotClassificationConfig):
        self.config = config

    def class_names(self, ctx: EvalContext) -> list[str]:
        """The recipe's classes, else the dataset's label names, else the split's distinct labels."""
        classes = self.config.classes
        if isinstance(classes, str):
            return read_lines(classes, "classes")
        if classes:
            return list(classes)
        names = getattr(ctx.parts.dataset, "label_names", None)
        if names:
            return [str(n) for n in names]
        labels = {s.get("label") for s in ctx.samples} - {None}
        return [str(label) for label in sorted(labels, key=lambda v: (str(type(v)), v))]

    def templates(self) -> list[str]:
        templates = self.config.templates
        if isinstance(templates, list):
            return templates
        if "{}" in templates:  # one template written as a string
            return [templates]
        lines = read_lines(templates, "templates")
        bad = [t for t in lines if t.count("{}") != 1]
        if bad:
            raise PolyalignError(f"zero_shot_classification templates: {templates}: the line {bad[0]!r} needs "
                                 f"exactly one {{}} for the class name")
        return lines

    def class_embeddings(self, ctx: EvalContext, prompts: list[list[str]]) -> torch.Tensor:
        """``(K, E)``: the mean of each class's prompt embeddings (``prompts[k]``: class k's, one per template)."""
        flat = [p for of_class in prompts for p in of_class]
        z = ctx.embed_values(self.config.text, flat).view(len(prompts), len(prompts[0]), -1).mean(1)
        return F.normalize(z, dim=-1) if ctx.parts.model.normalize == "l2" else z

    def queries(self, ctx: EvalContext) -> list[list[str]]:
        """The query subsets, checked against the model's modalities."""
        others = [m for m in ctx.modalities if m != self.config.text]
        if self.config.queries is None:
            return [[m] for m in others] + ([others] if len(others) > 1 else [])
        for query in self.config.queries:
            bad = [m for m in query if m not in others]
            if bad or not query:
                raise PolyalignError(f"zero_shot_classification query {query}: each query is a non-empty list of "
                                     f"the model's modalities other than the text one ({', '.join(others)})")
        return [list(q) for q in self.config.queries]

    def __call__(self, ctx: EvalContext) -> list[dict[str, Any]]:
        cfg = self.config
        if cfg.text not in ctx.modalities:
            raise PolyalignError(f"zero_shot_classification text: {cfg.text!r} is not a modality of the model "
                                 f"({', '.join(ctx.modalities)}); set text to the modality that reads class prompts")
        names = self.class_names(ctx)
        if len(names) < 2:
            raise PolyalignError(f"zero_shot_classification needs at least 2 classes, got {names}")
        labels = class_indices([s.get("label") for s in ctx.samples], names, ctx.split)
        prompts = [[t.format(name) for t in self.templates()] for name in names]
        note = integer_names_note(names, prompts[-1][0])
        if note:
            warnings.warn(Notice(note), stacklevel=2)
        classes = self.class_embeddings(ctx, prompts)
        _, present = ctx.embeddings()
        ks = sorted({1} | {k for k in cfg.top_k if k < len(names)})
        out: list[dict[str, Any]] = []
        for query in self.queries(ctx):
            rows = rows_with(present, query).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            queries = query_embeddings(ctx, cfg.text, query, rows)
            scores = ctx.score_tuples(queries, {cfg.text: classes}).float().cpu()
            truth = labels[rows]
            ranks = ranks_of_correct(scores, truth[:, None] == torch.arange(len(names))[None, :])
            hits = per_query_metrics(ranks, ks)
            top1 = hits["accuracy"]
            base = {"task": TASK, "target": TARGET, "query": sorted(query)}
            confusion = {"classes": names, "confusion": confusion_counts(truth, scores.argmax(1), len(names))}
            out += [{**base, "metric": name, "value": float(v.mean()), "n": int(rows.numel()),
                     **(confusion if name == "accuracy" else {})} for name, v in hits.items() if name != "mrr"]
            per_class = {k: top1[truth == k] for k in range(len(names)) if bool((truth == k).any())}
            out.append({**base, "metric": "mean_per_class_accuracy", "n": int(rows.numel()),
                        "value": float(torch.stack([v.mean() for v in per_class.values()]).mean())})
            out += [{**base, "class": names[k], "metric": "accuracy", "value": float(v.mean()), "n": int(v.numel()),
                     "prompts": prompts[k]} for k, v in per_class.items()]
        return out
