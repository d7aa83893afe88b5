"""The column-wise loading fast path gives the same batches as row-by-row loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import polyalign
from polyalign.core.batch import Collator, LoadedColumns
from polyalign.core.data import DataError, TupleDataset


def _dataset(samples, batch: bool) -> tuple[TupleDataset, Collator]:
    enc = polyalign.build("encoder", "vector", dim=3)
    encs = {"a": enc, "b": enc}
    loaders = {m: e.load for m, e in encs.items()}
    batch_loaders = {m: e.load_batch for m, e in encs.items()} if batch else None
    return (TupleDataset(samples, loaders, None, "train", "test", batch_loaders=batch_loaders),
            Collator({m: e.collate for m, e in encs.items()}))


def test_column_wise_batch_equals_row_wise_batch_with_holes():
    rng = np.random.default_rng(0)
    samples = [{"a": rng.normal(size=3), "b": rng.normal(size=3), "label": i % 2} for i in range(6)]
    del samples[1]["b"]
    samples[4]["a"] = None
    idx = [5, 1, 4, 0]
    fast_ds, collate = _dataset(samples, batch=True)
    slow_ds, _ = _dataset(samples, batch=False)
    fast_items = fast_ds.__getitems__(idx)
    assert isinstance(fast_items, LoadedColumns)
    fast, slow = collate(fast_items), collate(slow_ds.__getitems__(idx))
    assert fast.index.tolist() == slow.index.tolist() == idx
    assert fast.label.tolist() == slow.label.tolist()
    for m in ("a", "b"):
        assert torch.equal(fast.present[m], slow.present[m])
        assert torch.equal(fast.inputs[m], slow.inputs[m])
    assert fast.present["b"].tolist() == [True, False, True, True]
    assert fast.present["a"].tolist() == [True, True, False, True]


def test_a_bad_value_falls_back_to_rows_and_names_the_row():
    samples = [{"a": [1, 2, 3], "b": [1, 2, 3]}, {"a": [1, 2], "b": [1, 2, 3]}]
    ds, _ = _dataset(samples, batch=True)
    with pytest.raises(DataError, match=r"row 1, modality 'a'.*expected a vector of 3 numbers, got 2"):
        ds.__getitems__([0, 1])
