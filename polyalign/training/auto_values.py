"""What each ``auto`` of a recipe stands for on this machine: the device, the precision, the loader workers,
the threads, the embedding spaces of a list of losses, and a loss option that its plugin resolves (Symile's
``negatives``: the built loss has an attribute of the option's name holding the value it trains with)."""

from __future__ import annotations

from typing import Any

import torch

from polyalign.core.device import resolved_precision
from polyalign.core.loss import WeightedLoss
from polyalign.core.recipe import Recipe

from .loaders import reading_workers
from .threads import auto_threads


def loss_autos(recipe: Recipe, loss: torch.nn.Module) -> dict[str, str]:
    """``loss[.i].option`` -> the value the built loss trains with, for each loss option given as ``auto``."""
    terms = list(loss.terms.values()) if isinstance(loss, WeightedLoss) else [loss]
    out = {}
    for i, (node, term) in enumerate(zip(recipe.losses, terms)):
        where = "loss" if len(recipe.losses) == 1 else f"loss.{i}"
        for key, value in node.options().items():
            resolved: Any = getattr(term, key, None)
            if value == "auto" and isinstance(resolved, (str, int, float)) and resolved != "auto":
                out[f"{where}.{key}"] = str(resolved)
    return out


def resolved_autos(recipe: Recipe, loss: torch.nn.Module, device: torch.device,
                   workers: int | None = None) -> dict[str, str]:
    """YAML path -> what its ``auto`` stands for on this machine, for every ``auto`` of ``recipe``;
    ``workers``: the loader workers chosen from the first train row (None: not read, both cases said)."""
    train = recipe.train
    out = {}
    if train.device == "auto":
        out["train.device"] = str(device)
    if train.precision == "auto":
        out["train.precision"] = resolved_precision("auto", device)
    if train.num_workers == "auto":
        out["train.num_workers"] = (str(workers) if workers is not None else
                                    f"0 for train rows of numbers only, else {reading_workers()}")
    if train.threads == "auto":
        shown = workers if workers is not None else (train.num_workers if train.num_workers != "auto" else 0)
        out["train.threads"] = str(auto_threads(shown)) + ("" if workers is not None or train.num_workers != "auto"
                                                          else " less the loader workers")
    if recipe.model.spaces == "auto" and isinstance(loss, WeightedLoss):
        out["model.spaces"] = "per_term" if loss.n_spaces > 1 else "shared"
    if recipe.model.balance == "auto" and isinstance(loss, WeightedLoss):
        out["model.balance"] = "gradients" if loss.balance is not None else "none"
    return {**out, **loss_autos(recipe, loss)}


def autos_text(autos: dict[str, str]) -> list[str]:
    """One line per ``auto``: ``train.threads: auto -> 2 on this machine``."""
    return [f"{path}: auto -> {value} on this machine" for path, value in autos.items()]
