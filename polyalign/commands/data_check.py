"""``polyalign validate --check-data``: build every plugin of a recipe, check every row's file references
(a stat each) and push a sample of rows of each split through its encoders, so a constructor that raises, a
missing file or one that does not decode shows before training."""

from __future__ import annotations

import itertools
import time
from typing import Any

import torch

from polyalign.commands.file_references import bounded, broken_references
from polyalign.core.assemble import Assembled, assemble
from polyalign.core.data import SPLITS, DataError
from polyalign.core.errors import PolyalignError
from polyalign.core.loss import check_loss_output
from polyalign.core.modality_check import HEAD, absent_modality_problems
from polyalign.core.plugin_manager import Plugins, default_plugins
from polyalign.core.recipe import Recipe
from polyalign.core.step_cost import duration
from polyalign.core.stream import is_stream


def _detail(exc: Exception) -> str:
    return str(exc) if isinstance(exc, PolyalignError) else f"{type(exc).__name__}: {exc}"


def check_data(recipe: Recipe, plugins: Plugins | None = None, rows: int = 4) -> list[str]:
    """Build the recipe's dataset, encoders, loss and evaluators, check that every file each row names
    is there (a stat, no decoding; streamed splits excepted), then load, collate and embed a sample of each
    split: its first ``rows`` rows and ``rows`` more spread over it (and apply the loss to the train sample).

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
            line, broken = _check_references(parts, split, problems)
            indices = [i for i in sample_rows(sizes[split], rows) if i not in broken]  # each problem said once
            lines += [line, *(_check_split(parts, recipe, split, indices, problems) if indices else [
                f"{split}: no row of the sample decoded (each names a missing file)"])]
        else:
            lines.append(f"{split}: empty")
    if problems:
        raise PolyalignError(f"{len(problems)} problem(s) with the data or the plugins:\n"
                             + "\n".join(f"  {p}" for p in problems))
    return lines


def sample_rows(size: int, rows: int) -> list[int]:
    """The rows decoded of a split of ``size``: the first ``rows``, and ``rows`` more evenly spread to its last."""
    spread = [round(k * (size - 1) / rows) for k in range(1, rows + 1)]
    return sorted({*range(min(rows, size)), *spread})


def _rows_text(indices: list[int]) -> str:
    """'rows 0-3' for a run of rows, else 'rows 0, 1, 2, 3, 250, 500, 750, 999'."""
    if indices == list(range(indices[0], indices[-1] + 1)):
        return f"rows {indices[0]}-{indices[-1]}" if len(indices) > 1 else f"row {indices[0]}"
    return "rows " + ", ".join(map(str, indices))


def _check_references(parts: Assembled, split: str, problems: list[str]) -> tuple[str, set[int]]:
    """Stat every file that a row of ``split`` names; one line saying what was checked, and the rows whose
    broken references are problems (none with ``data.on_error: skip``: those rows would be skipped)."""
    if is_stream(parts.dataset.split(split)):
        return f"{split}: streamed (tar shards): its file references are not checked one by one", set()
    data = parts.tuples(split)
    files, broken = broken_references(data.samples, data.root, data.where)
    line = f"{split}: every row's files checked ({files} file reference(s) in {len(data)} rows, {len(broken)} broken)"
    if broken and data.skipped is not None:  # data.on_error: skip -- reported, not a problem
        return (line + f"; {len({row for row, _ in broken})} row(s) would be skipped (data.on_error: skip): "
                f"{broken[0][1]}", set())
    if broken:
        problems.append(f"{split}: {len(broken)} of {files} file reference(s) cannot be read:\n    "
                        + "\n    ".join(bounded([message for _, message in broken])))
    return line, {row for row, _ in broken}


def _check_split(parts: Assembled, recipe: Recipe, split: str, indices: list[int], problems: list[str]) -> list[str]:
    """Load, collate and embed the rows ``indices`` of ``split``: a line saying what was checked (for train,
    also one timing a whole step on them)."""
    data = parts.tuples(split)
    known = len(problems)
    n, rows = len(indices), _rows_text(indices)
    items: list[tuple[int, dict[str, Any], Any]] = []
    for i in indices:
        try:
            items.append(data[i])
        except DataError as exc:
            problems.append(str(exc))
    skipped = data.take_skipped()  # data.on_error: skip -- reported, not a problem
    note = f"; {len(skipped)} row(s) would be skipped (data.on_error: skip): {skipped[0]}" if skipped else ""
    if len(items) < n:
        return [f"{split}: {rows}: {n - len(items)} failed to load"]
    present: dict[str, int] = {}
    with torch.no_grad():
        for m, encoder in parts.model.encoders.items():
            values = [v[m] for _, v, _ in items if m in v]
            present[m] = len(values)
            if not values:
                continue
            where = f"{split}, {rows}, modalities.{m}.encoder ({recipe.modalities[m].encoder.plugin})"
            try:
                collated = encoder.collate(values)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{where}: collate of {len(values)} loaded values failed: {_detail(exc)}")
                continue
            try:
                parts.model.encode(m, collated)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{where}: embedding the collated batch failed: {_detail(exc)}")
        line = (f"{split}: {rows} loaded, collated and embedded ("
                + ", ".join(f"{m} {k}/{n}" for m, k in present.items()) + " present)")
        if split == "train" and len(problems) == known:
            batch = parts.collator()(items)
            emb = parts.model(batch.inputs, batch.present)
            try:
                out = check_loss_output(parts.loss(emb, parts.model.loss_present(batch.present)), parts.loss_name)
                line += f"; loss {float(out.loss):.4f}"
            except Exception as exc:  # noqa: BLE001
                problems.append(f"loss ({parts.loss_name}) on train {rows}: {_detail(exc)}")
    if split == "train" and len(problems) == known:
        return [line + note, _step_line(parts, items, recipe.train.batch_size, recipe.train.accumulate)]
    return [line + note]


def _step_line(parts: Assembled, items: list[tuple[int, dict[str, Any], Any]], batch_size: int,
               accumulate: int) -> str:
    """Time one whole training step (encoders and loss, forward and backward; no optimizer update) on the
    loaded train rows, the fastest of two after a warm-up, and scale it by rows to the ``batch_size`` x
    ``accumulate`` rows of one optimizer step."""
    batch = parts.collator()(items)
    device = next(parts.model.parameters()).device
    parts.model.train()
    times = []
    try:
        for _ in range(3):
            start = time.perf_counter()
            emb = parts.model(batch.inputs, batch.present)
            loss = parts.loss(emb, parts.model.loss_present(batch.present)).loss
            if loss.requires_grad:
                loss.backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    finally:
        parts.model.eval()
        parts.model.zero_grad(set_to_none=True)
        parts.loss.zero_grad(set_to_none=True)
    took, n = min(times[1:]), len(items)
    size = f"train.batch_size {batch_size}" + (f" x train.accumulate {accumulate}" if accumulate > 1 else "")
    return (f"train: one whole step (encoders and loss, forward and backward) on these {n} rows: {duration(took)} "
            f"on {device.type}; at {size}, about {duration(took * batch_size * accumulate / n)} a step (scaled "
            f"by rows; data loading and the optimizer not counted)")
