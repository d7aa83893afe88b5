"""A recipe modality that no row of a split provides (a dataset emitting ``spectra`` for the
recipe's ``spectrum``, a shard member extension that matches nothing): found from the rows' keys
before anything is loaded, and said with what the rows do provide."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any

from polyalign.files.manifest_file import RESERVED_KEYS

from .errors import PolyalignError
from .stream import is_stream

HEAD = 1000  # rows of a split looked at before training (examples, load checks, modalities present)


def row_keys(samples: Iterable[dict[str, Any]]) -> list[str]:
    """The keys the samples hold a value for, in first-seen order."""
    keys: dict[str, None] = {}
    for sample in samples:
        keys.update((k, None) for k, v in sample.items() if v is not None)
    return list(keys)


def provided_text(split: Any, samples: Sequence[dict[str, Any]]) -> str:
    """What the rows of a split provide, for messages: a stream's own account (e.g. the shard
    members it read) or the rows' keys."""
    if is_stream(split):
        return split.provided(len(samples))
    keys = row_keys(samples)
    modal = [k for k in keys if k not in RESERVED_KEYS]
    reserved = [k for k in keys if k in RESERVED_KEYS]
    return "keys " + (", ".join(map(repr, modal + reserved)) or "(none)")


def absent_modality_problems(modalities: Sequence[str], split_name: str, split: Any,
                             samples: Sequence[dict[str, Any]], plugin: str) -> list[str]:
    """One problem per modality absent from every one of ``samples`` (the first rows of ``split``),
    naming the split and what the rows provide; none for an empty split."""
    if not samples:
        return []
    have = set(row_keys(samples))
    absent = [m for m in modalities if m not in have]
    if not absent:
        return []
    whole = hasattr(split, "__len__") and len(split) == len(samples)
    rows = f"all {len(samples)} rows" if whole else f"the first {len(samples)} rows"
    provided = provided_text(split, samples)
    unused = [k for k in have if k not in modalities and k not in RESERVED_KEYS]
    problems = []
    for m in absent:
        close = difflib.get_close_matches(m, unused, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(f"modalities.{m}: no row provides {m!r}: it is absent from {rows} of the {split_name!r} "
                        f"split of the dataset ({plugin}), whose rows provide {provided}{hint}. Name the modality "
                        f"as the dataset does, or fix the dataset (or its modality map)")
    return problems


def check_modalities_present(modalities: Sequence[str], split_name: str, split: Any,
                             samples: Sequence[dict[str, Any]], plugin: str) -> None:
    """Raise :class:`PolyalignError` when a modality is absent from every one of ``samples``."""
    problems = absent_modality_problems(modalities, split_name, split, samples, plugin)
    if problems:
        raise PolyalignError("\n".join(problems))
