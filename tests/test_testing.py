"""The plugin author's kit (polyalign.testing) on correct plugins and on deliberately broken ones:
each broken plugin must fail the property it breaks, with the plugin and the numbers named."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import polyalign
from polyalign.core import plugin_manager as plugins_module
from polyalign.core.encoder import Encoder, pad_with_mask
from polyalign.core.loss import LossOutput
from polyalign.core.plugin_manager import make_plugins
from polyalign.core.stream import Shard, StreamSplit
from polyalign.plugins.encoders.vector import VectorConfig, VectorEncoder
from polyalign.plugins.losses.clip import ClipConfig, ClipLoss
from polyalign.testing import ConformanceError, check_dataset, check_encoder, check_evaluator, check_loss

SEQUENCES = [[1.0, 2.0, 3.0], [4.0, 5.0], [6.0]]


class SequenceEncoder(Encoder):
    """Sequences of numbers of any length -> a linear map per step -> masked mean (a correct encoder)."""

    def __init__(self):
        super().__init__()
        self.width = 4
        self.step = nn.Linear(1, 4)

    def load(self, value, root):
        return torch.tensor(value, dtype=torch.float32)

    def collate(self, values):
        x, mask = pad_with_mask(values)
        return {"x": x, "mask": mask}

    def mean(self, h, mask):
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1)

    def forward(self, batch):
        return self.mean(self.step(batch["x"].unsqueeze(-1)), batch["mask"])


class NoWidth(SequenceEncoder):
    def __init__(self):
        super().__init__()
        del self.width


class NarrowOutput(SequenceEncoder):
    def forward(self, batch):
        return super().forward(batch)[:, :2]


class FailsOnShortValues(SequenceEncoder):
    def load(self, value, root):
        if len(value) < 2:
            raise ValueError("too short")
        return super().load(value, root)


class DropsLastRow(SequenceEncoder):
    def collate(self, values):
        return super().collate(values[:-1])


class ReversedLoadBatch(SequenceEncoder):
    def load_batch(self, values, root):
        return self.collate([self.load(v, root) for v in reversed(values)])


class NanOutput(SequenceEncoder):
    def forward(self, batch):
        return super().forward(batch) / 0.0 * 0.0


class NoGradient(SequenceEncoder):
    def forward(self, batch):
        with torch.no_grad():
            return super().forward(batch)


class UnmaskedMean(SequenceEncoder):
    def forward(self, batch):  # averages the padding too: a row depends on the longest row of its batch
        return self.step(batch["x"].unsqueeze(-1)).mean(1)


class TimeFirst(SequenceEncoder):
    def collate(self, values):  # (steps, batch): the core selects and scatters rows on the first dimension
        x, mask = pad_with_mask(values)
        return {"x": x.T.contiguous(), "mask": mask.T.contiguous()}

    def forward(self, batch):
        return self.mean(self.step(batch["x"].T.unsqueeze(-1)), batch["mask"].T)


def test_a_correct_encoder_passes_and_keeps_its_mode():
    enc = SequenceEncoder()
    assert check_encoder(enc, SEQUENCES) is enc and enc.training


@pytest.mark.parametrize("encoder, prop, says", [
    (NoWidth, "width", "NoWidth has no attribute `width`"),
    (NarrowOutput, "forward", "forward returned (3, 2) torch.float32 for a batch of 3; expected a floating (3, 4)"),
    (FailsOnShortValues, "load", "load(value 2: [6.0], root=None) raised ValueError: too short"),
    (DropsLastRow, "collate", "collating 3 values gave x: 2, mask: 2 rows"),
    (ReversedLoadBatch, "load_batch", "differs from collate([load(v) for v in values]): key 'x': max abs difference"),
    (NanOutput, "forward", "12 of 12 features are NaN or infinite"),
    (NoGradient, "gradients", "the features do not depend on any of its 2 trainable parameters"),
    (UnmaskedMean, "batch independence", "row 1 ([4.0, 5.0]) encoded alone differs from the same row in a batch of 3"),
])
def test_a_broken_encoder_fails_the_property_it_breaks(encoder, prop, says):
    with pytest.raises(ConformanceError) as info:
        check_encoder(encoder(), SEQUENCES)
    assert isinstance(info.value, AssertionError)
    assert str(info.value).startswith(f"encoder {encoder.__name__} fails {prop!r}: ") and says in str(info.value)


def test_rows_must_be_the_first_dimension_for_batches_with_holes():
    values = [[1.0, 2.0, 3.0, 4.0], [5.0, 6.0], [7.0]]
    with pytest.raises(ConformanceError, match="fails 'collate': collating 3 values gave x: 4, mask: 4 rows"):
        check_encoder(TimeFirst(), values)
    with pytest.raises(ConformanceError, match="fails 'missing rows': collating a batch whose row 1 lacks the "
                                               "modality raised RuntimeError: shape mismatch"):
        check_encoder(TimeFirst(), values, skip=["collate"])


def test_skip_names_known_properties_and_one_value_is_not_enough():
    with pytest.raises(ValueError, match="unknown property 'batch independance'; the properties are: width, load"):
        check_encoder(SequenceEncoder(), SEQUENCES, skip=["batch independance"])
    with pytest.raises(ValueError, match="at least two raw values"):
        check_encoder(SequenceEncoder(), SEQUENCES[:1])
    check_encoder(UnmaskedMean(), SEQUENCES, skip=["batch independence"])


class ForgetsInferredDim(VectorEncoder):
    def rebuild_options(self):
        return {}  # the dim came from the example: without it the encoder cannot be rebuilt


class Registering:
    @polyalign.hookimpl
    def register_encoders(self, register):
        register("forgetful", lambda config, example=None: ForgetsInferredDim(len(example), []), config=VectorConfig)

    @polyalign.hookimpl
    def register_losses(self, register):
        register("m2_broken", lambda config: FailsForTwo(config), config=ClipConfig)


@pytest.fixture
def registered(monkeypatch):
    plugins = make_plugins(extra=[Registering()])
    monkeypatch.setattr(plugins_module, "default_plugins", lambda: plugins)


def test_registered_encoders_are_built_as_a_run_builds_them_and_rebuilt(registered):
    check_encoder("vector", [[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]], hidden=[8])
    with pytest.raises(ConformanceError, match=r"encoder 'forgetful' fails 'rebuild': building it from its options "
                                               r"plus rebuild_options\(\) \{\} without an example raised TypeError"):
        check_encoder("forgetful", [[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]])
    with pytest.raises(ConformanceError, match="encoder 'vector' fails 'build': ValidationError"):
        check_encoder("vector", [[1.0], [2.0]], hiden=[8])


def clip():
    return ClipConfig(temperature=0.2)


class ReturnsFloat(ClipLoss):
    def forward(self, embeddings, present=None):
        return float(super().forward(embeddings, present).loss.detach())


class Detached(ClipLoss):
    def forward(self, embeddings, present=None):
        out = super().forward(embeddings, present)
        return LossOutput(out.loss.detach(), out.metrics)


class FirstTwoOnly(ClipLoss):
    def forward(self, embeddings, present=None):
        keep = list(embeddings)[:2]
        return super().forward({m: embeddings[m] for m in keep}, {m: present[m] for m in keep} if present else None)


class OrderDependent(ClipLoss):
    def forward(self, embeddings, present=None):
        out = super().forward(embeddings, present)
        first = next(iter(embeddings.values()))
        return LossOutput(out.loss + 0.1 * first[:, 0].mean(), out.metrics)


class IgnoresPresent(ClipLoss):
    def forward(self, embeddings, present=None):
        return super().forward(embeddings, None)


class NanWhenAbsent(ClipLoss):
    def forward(self, embeddings, present=None):
        out = super().forward(embeddings, present)
        last = list(embeddings)[-1]
        rows = present[last] if present else slice(None)
        return LossOutput(out.loss + 0.0 * embeddings[last][rows].mean(), out.metrics)


class TransposedScore(ClipLoss):
    def score(self, queries, candidates, target):
        return super().score(queries, candidates, target).T


class NegatedScore(ClipLoss):
    def score(self, queries, candidates, target):
        return -super().score(queries, candidates, target)


class WrongInnerProduct(ClipLoss):
    def inner_product_query(self, queries, target):
        return -super().inner_product_query(queries, target)


class FailsForTwo(ClipLoss):
    def forward(self, embeddings, present=None):
        if len(embeddings) == 2:
            raise RuntimeError("needs three modalities")
        return super().forward(embeddings, present)


def test_correct_losses_pass():
    check_loss(ClipLoss(clip()))
    check_loss("symile", modality_counts=[2, 3, 4], batch_size=6, embed_dim=8)


@pytest.mark.parametrize("loss, prop, says", [
    (ReturnsFloat, "output", "returned a float; forward() must return LossOutput("),
    (Detached, "gradients", "the loss does not depend on the embeddings (no gradient)"),
    (FirstTwoOnly, "gradients", "modality 'c' gets no gradient"),
    (OrderDependent, "modality order", "for modalities a, b, c and "),
    (IgnoresPresent, "missing rows", "changing only the absent rows (present=False) changes the loss from"),
    (NanWhenAbsent, "missing rows", "the loss is nan with modality 'c' absent from every row"),
    (TransposedScore, "score shape", "score(6 queries of a, 8 candidates of 'c') returned (8, 6); expected (6, 8)"),
    (NegatedScore, "positive ranks first", "on aligned embeddings, query row 0 of a ranks candidate"),
    (WrongInnerProduct, "inner product", "inner_product_query ranks candidate"),
])
def test_a_broken_loss_fails_the_property_it_breaks(loss, prop, says):
    with pytest.raises(ConformanceError) as info:
        check_loss(loss(clip()), modality_counts=[3])
    assert str(info.value).startswith(f"loss {loss.__name__} (M=3) fails {prop!r}: ") and says in str(info.value)


def test_each_number_of_modalities_is_checked_and_named(registered):
    check_loss(FailsForTwo(clip()), modality_counts=[3, 4, 5])
    with pytest.raises(ConformanceError, match=r"loss 'm2_broken' \(M=2\) fails 'output': forward raised "
                                               r"RuntimeError: needs three modalities"):
        check_loss("m2_broken")
    with pytest.raises(ConformanceError, match=r"loss 'clip' \(M=3\) fails 'modality order'"):
        check_loss("clip", pairs="star")  # the star's default anchor is the first modality given
    check_loss("clip", pairs="star", anchor="a")


# --------------------------------------------------------------------------- datasets
class Rows:
    """A correct map-form dataset of vectors ``a`` and ``b`` with labels, label names and ids."""

    modalities = ("a", "b")
    root = None
    label_names = ("no", "yes")

    def __init__(self, n: int = 12):
        self.rows = [{"a": [float(i), 1.0], "b": [1.0, float(-i)], "label": i % 2, "id": f"r{i}"} for i in range(n)]

    def split(self, name):
        return self.rows if name == "train" else self.rows[:4]


class StrayKey(Rows):
    modalities = ("a", "spectrum")

    def __init__(self):
        super().__init__()
        self.rows = [{"a": r["a"], "spectra": r["b"]} for r in self.rows]


class ExtraKey(Rows):
    def split(self, name):
        return [{**r, "b_typo": r["b"]} for r in self.rows]


class Random(Rows):
    def split(self, name):
        return [{**r, "a": torch.randn(2).tolist()} for r in self.rows]


class SameIds(Rows):
    def split(self, name):
        return [{**r, "id": "x"} for r in self.rows]


class LabelPastNames(Rows):
    label_names = ("only",)


class MixedLabels(Rows):
    def split(self, name):
        return [{**r, "label": "yes" if i else 0} for i, r in enumerate(self.rows)]


class NotASequence(Rows):
    def split(self, name):
        return {"rows": self.rows}


def test_correct_datasets_pass():
    assert isinstance(check_dataset(Rows()), Rows)
    check_dataset("xor", n_train=32, n_val=8, n_test=8)


@pytest.mark.parametrize("dataset, prop, says", [
    (StrayKey, "modalities", ("modalities.spectrum: no row provides 'spectrum': it is absent from all 12 rows of "
                              "the 'train' split of the dataset (StrayKey), whose rows provide keys 'a', 'spectra' "
                              "(did you mean 'spectra'?)")),
    (ExtraKey, "modalities", ("rows of 'train' hold 'b_typo', which is no modality of the dataset (a, b) nor "
                              "label/id: it would be ignored")),
    (Random, "determinism", "read twice, split 'train' differs at row 0"),
    (SameIds, "ids", "id 'x' appears 12 times in the first 12 rows of 'train'"),
    (LabelPastNames, "labels", "label 1 of 'train' indexes no class of label_names (1 names)"),
    (MixedLabels, "labels", "must be all ints (class indices) or all strings (class names)"),
    (NotASequence, "splits", "split('train') returned a dict"),
])
def test_a_broken_dataset_fails_the_property_it_breaks(dataset, prop, says):
    with pytest.raises(ConformanceError) as info:
        check_dataset(dataset())
    assert str(info.value).startswith(f"dataset {dataset.__name__} fails {prop!r}: ") and says in str(info.value)


def test_a_promised_modality_no_row_provides_is_named():
    class Promises(Rows):
        modalities = ("a", "b", "c")

    with pytest.raises(ConformanceError, match=r"fails 'modalities': modalities\.c: no row provides 'c': it is "
                                               r"absent from all 12 rows of the 'train' split"):
        check_dataset(Promises())
    with pytest.raises(ConformanceError, match="dataset 'xor' fails 'build': ValidationError"):
        check_dataset("xor", n_train=0)


# --------------------------------------------------------------------------- evaluators
class Fixed:
    """An evaluator returning given rows (each test breaks them in one way)."""

    def __init__(self, rows):
        self.rows = rows

    def __call__(self, ctx):
        return [dict(r) for r in self.rows]


ROW = {"task": "mine", "target": "b", "query": ["a"], "metric": "accuracy", "value": 0.5}


class Unseeded:
    calls = 0

    def __call__(self, ctx):
        Unseeded.calls += 1
        return [{**ROW, "value": 0.1 * Unseeded.calls}]


@pytest.mark.parametrize("name, options", [
    ("zero_shot", {"target": "b"}), ("retrieval", {"top_k": [1]}), ("missing_modality", {"resamples": 10}),
    ("zero_shot_classification", {}), ("linear_probe", {"features": [["a"]], "draws": 1, "cs": [1.0]}),
])
def test_the_built_in_evaluators_pass(name, options):
    if name == "linear_probe":
        pytest.importorskip("sklearn")
    rows = check_evaluator(name, **options)
    assert name in {r["task"] for r in rows}


@pytest.mark.parametrize("rows, prop, says", [
    ([], "rows", "it returned no rows on 24 complete rows of 'test'"),
    ([{**ROW, "value": "high"}], "rows", "row 0: 'value' must be a number, got 'high'"),
    ([ROW, ROW], "rows", "rows 0 and 1 are alike but for their numbers (mine, b from a, accuracy)"),
    ([{**ROW, "query": ["b", "a"]}], "names", "row 0: query ['b', 'a'] must be a sorted list of modalities"),
    ([{**ROW, "query": ["z"]}], "names", "query ['z'] must be a sorted list of modalities of the model (a, b, text)"),
    ([{**ROW, "metric": "top 5"}], "names", "row 0: metric 'top 5' must be non-empty, without '/' or spaces"),
    ([{**ROW, "value": float("nan")}], "finite", "row 0: value is nan"),
])
def test_a_broken_evaluator_fails_the_property_it_breaks(rows, prop, says):
    with pytest.raises(ConformanceError) as info:
        check_evaluator(Fixed(rows))
    assert str(info.value).startswith(f"evaluator Fixed fails {prop!r}: ") and says in str(info.value)


def test_an_evaluator_giving_other_numbers_each_run_fails_determinism():
    with pytest.raises(ConformanceError, match="evaluator Unseeded fails 'determinism': a second run on the same "
                                               "model and data gives 1 rows"):
        check_evaluator(Unseeded())
    with pytest.raises(ConformanceError, match="evaluator 'zero_shot' fails 'build': ValidationError"):
        check_evaluator("zero_shot")  # target is required


class ListStream(StreamSplit):
    """Shards of rows held in lists (the iterable form); ``honest=False`` ignores ``skip``."""

    def __init__(self, shards: list[list[dict]], honest: bool = True):
        super().__init__([Shard(f"s{k}", len(rows)) for k, rows in enumerate(shards)])
        self.rows, self.honest = shards, honest

    def read(self, shard, skip=0):
        rows = self.rows[int(shard.name[1:])]
        for i, row in enumerate(rows):
            if i >= skip or not self.honest:
                yield f"{shard.name}-{i}", row


def test_the_iterable_form_is_read_as_its_shards_say():
    rows = Rows().rows

    class Streamed(Rows):
        honest = True

        def split(self, name):
            return ListStream([rows[:5], rows[5:]], self.honest)

    check_dataset(Streamed())
    Streamed.honest = False
    with pytest.raises(ConformanceError, match=r"fails 'iterable form': shard s0: read\(shard, skip=2\) gives "
                                               r"keys \['s0-0', 's0-1', 's0-2'\]\.\.\., expected "
                                               r"\['s0-2', 's0-3', 's0-4'\]"):
        check_dataset(Streamed())
