"""``polyalign validate --check-data``: build every plugin of a recipe and push a few rows of each
split through its encoders, so a constructor that raises or an unreadable file shows before training."""

from __future__ import annotations

import itertools
from typing import Any

import torch

from polyalign.core.assemble import Assembled, assemble
from polyalign.core.data import SPLITS, DataError
from polyalign.core.errors import PolyalignError
from polyalign.core.loss import check_loss_output
from polyalign.core.modality_check import HEAD, absent_modality_problems
from polyalign.core.plugin_manager import Plugins, default_plugins
from polyalign.core.recipe import Recipe


def _detail(exc: Exception) -> str:
    return str(exc) if isinstance(exc, PolyalignError) else f"{type(exc).__name__}: {exc}"


def check_data(recipe: Recipe, plugins: Plugins | None = None, rows: int = 4) -> list[str]:
    """Build the recipe's dataset, encoders, loss and evaluators, then load, collate and embed the
    first ``rows`` rows of each split (and apply the loss to the train rows).

    Returns one line per thing checked; raises :class:`PolyalignError` listing every problem found.
    """
    plugins = plugins or default_plugins()
    parts = assemble(recipe, plugins)  # dataset, encoders, loss: errors name their recipe path
    sizes = {s: len(parts.dataset.split(s)) for s in SPLITS}
    lines = [f"dataset {recipe.data.plugin}: " + ", ".join(f"{s} {n} rows" for s, n in sizes.items()),
             "encoders: " + ", ".join(f"{m} ({node.encoder.plugin}, width {int(parts.model.encoders[m].width)})"
                                      for m, node in recipe.modalities.items()),
             f"loss: {parts.loss_name}"]
    problems: list[str] = []
    for i, node in enumerate(recipe.eval):
        try:
            plugins.build("evaluator", node.plugin, **node.options())
        except Exception as exc:  # noqa: BLE001 - every problem is reported at the end
            problems.append(f"eval.{i} ({node.plugin}): the evaluator failed to build: {_detail(exc)}")
    if recipe.eval:
        lines.append("evaluators: " + ", ".join(n.plugin for n in recipe.eval))
    parts.model.eval()
    for split in SPLITS[1:]:  # train: checked by assemble
        head = list(itertools.islice(parts.samples(split), HEAD))
        problems += absent_modality_problems(list(recipe.modalities), split, parts.dataset.split(split), head,
                                             recipe.data.plugin)
    for split in SPLITS:
        if sizes[split]:
            lines.append(_check_split(parts, recipe, split, min(rows, sizes[split]), problems))
        else:
            lines.append(f"{split}: empty")
    if problems:
        raise PolyalignError(f"{len(problems)} problem(s) with the data or the plugins:\n"
                             + "\n".join(f"  {p}" for p in problems))
    return lines


def _check_split(parts: Assembled, recipe: Recipe, split: str, n: int, problems: list[str]) -> str:
    """Load, collate and embed the first ``n`` rows of ``split``; one line saying what was checked."""
    data = parts.tuples(split)
    known = len(problems)
    items: list[tuple[int, dict[str, Any], Any]] = []
    for i in range(n):
        try:
            items.append(data[i])
        except DataError as exc:
            problems.append(str(exc))
    skipped = data.take_skipped()  # data.on_error: skip -- reported, not a problem
    note = f"; {len(skipped)} row(s) would be skipped (data.on_error: skip): {skipped[0]}" if skipped else ""
    if len(items) < n:
        return f"{split}: rows 0-{n - 1}: {n - len(items)} failed to load"
    present: dict[str, int] = {}
    with torch.no_grad():
        for m, encoder in parts.model.encoders.items():
            values = [v[m] for _, v, _ in items if m in v]
            present[m] = len(values)
            if not values:
                continue
            where = f"{split}, rows 0-{n - 1}, modalities.{m}.encoder ({recipe.modalities[m].encoder.plugin})"
            try:
                collated = encoder.collate(values)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{where}: collate of {len(values)} loaded values failed: {_detail(exc)}")
                continue
            try:
                parts.model.encode(m, collated)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{where}: embedding the collated batch failed: {_detail(exc)}")
        line = (f"{split}: rows 0-{n - 1} loaded, collated and embedded ("
                + ", ".join(f"{m} {k}/{n}" for m, k in present.items()) + " present)")
        if split == "train" and len(problems) == known:
            batch = parts.collator()(items)
            emb = parts.model(batch.inputs, batch.present)
            try:
                out = check_loss_output(parts.loss(emb, parts.model.loss_present(batch.present)), parts.loss_name)
                line += f"; loss {float(out.loss):.4f}"
            except Exception as exc:  # noqa: BLE001
                problems.append(f"loss ({parts.loss_name}) on train rows 0-{n - 1}: {_detail(exc)}")
    return line + note
