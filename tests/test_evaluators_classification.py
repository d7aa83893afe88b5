"""Evaluators ``zero_shot_classification`` (prompt embeddings averaged per class, as in CLIP) and
``linear_probe`` (scikit-learn logistic regression, C chosen on val), on known embeddings."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from polyalign.core.assemble import Assembled
from polyalign.core.errors import Notice, PolyalignError
from polyalign.core.evaluator import EvalContext
from polyalign.core.model import MultiModalModel
from polyalign.core.plugin_manager import default_plugins
from polyalign.core.recipe import validate_recipe
from polyalign.evaluation.evaluate import run_evaluators, write_report
from polyalign.files.yaml_file import read_yaml
from polyalign.plugins.encoders.byte_text import ByteTextConfig, ByteTextEncoder
from polyalign.plugins.encoders.vector import VectorConfig, VectorEncoder
from polyalign.plugins.evaluators.linear_probe import LinearProbe, LinearProbeConfig, few_shot_rows
from polyalign.plugins.evaluators.zero_shot_classification import ZeroShotClassification, ZeroShotClassificationConfig
from polyalign.plugins.losses.clip import ClipConfig, ClipLoss

RECIPE = Path(__file__).resolve().parents[1] / "polyalign" / "recipes" / "xor-clip.yaml"
NAMES = ["red circle", "green square", "blue triangle"]
D = 8


class Splits:
    """A dataset given in code: samples per split and class names."""

    root = None
    modalities = ("text", "a", "b")

    def __init__(self, samples: dict[str, list[dict]], label_names=None):
        self.samples = samples
        self.label_names = label_names

    def split(self, name):
        return self.samples[name]


def context(labels: dict[str, list], emb: dict[str, dict[str, np.ndarray]], label_names=NAMES) -> EvalContext:
    """A context over a real (tiny, untrained) byte_text encoder for the prompts, and the given
    embeddings of ``a`` and ``b`` per split (no encoder runs for them)."""
    torch.manual_seed(0)
    text = ByteTextEncoder(ByteTextConfig(dim=16, layers=1, heads=2, max_length=32))
    scalar = VectorConfig(dim=1, hidden=[])
    model = MultiModalModel({"text": text, "a": VectorEncoder(scalar), "b": VectorEncoder(scalar)}, D, "l2")
    samples = {s: [{"text": "x", "a": [0.0], "b": [0.0], "label": y} for y in ys] for s, ys in labels.items()}
    ctx = EvalContext(Assembled(Splits(samples, label_names), model, ClipLoss(ClipConfig())), "test",
                      torch.device("cpu"), seed=0)
    for split, by_modality in emb.items():
        n = len(labels[split])
        z = {m: torch.tensor(v, dtype=torch.float32) for m, v in by_modality.items()}
        z["text"] = torch.zeros(n, D)
        ctx._cache["emb" if split == "test" else f"emb:{split}"] = (z, {m: torch.ones(n, dtype=torch.bool) for m in z})
    return ctx


def unit_rows(rng, n):
    return F.normalize(torch.tensor(rng.normal(size=(n, D))), dim=1).numpy()


def test_zero_shot_classification_equals_the_clip_recipe_by_hand():
    rng = np.random.default_rng(0)
    labels = [i % 3 for i in range(30)]
    a, b = unit_rows(rng, 30), unit_rows(rng, 30)
    ctx = context({"test": labels}, {"test": {"a": a, "b": b}})
    templates = ["a {}", "there is the {} here"]
    rows = ZeroShotClassification(ZeroShotClassificationConfig(templates=templates, top_k=[1, 2, 5]))(ctx)

    model = ctx.parts.model.eval()
    enc = model.encoders["text"]
    with torch.no_grad():  # one prompt at a time: normalised embeddings, mean per class, normalised again
        per_class = [torch.stack([model.encode("text", enc.collate([enc.load(t.format(n), None)]))[0]
                                  for t in templates]).mean(0) for n in NAMES]
    classes = F.normalize(torch.stack(per_class), dim=1).double().numpy()
    truth = np.array(labels)
    for query, q in {("a",): a, ("b",): b, ("a", "b"): a + b}.items():  # CLIP: sum over query modalities
        scores = q.astype(np.float32).astype(np.float64) @ classes.T
        predicted = scores.argmax(1)
        second = np.argsort(-scores, 1)[:, :2]
        got = {(r["metric"], r.get("class")): r["value"] for r in rows if r["query"] == list(query)}
        assert got[("accuracy", None)] == pytest.approx(np.mean(predicted == truth), abs=1e-6)
        assert got[("top2", None)] == pytest.approx(np.mean((second == truth[:, None]).any(1)), abs=1e-6)
        per = [np.mean(predicted[truth == k] == k) for k in range(3)]
        assert got[("mean_per_class_accuracy", None)] == pytest.approx(np.mean(per), abs=1e-6)
        for k, name in enumerate(NAMES):
            assert got[("accuracy", name)] == pytest.approx(per[k], abs=1e-6)
        assert ("top5", None) not in got  # 5 >= the number of classes: not reported
        top1 = next(r for r in rows if r["query"] == list(query) and r["metric"] == "accuracy" and "class" not in r)
        assert top1["classes"] == NAMES and np.sum(top1["confusion"]) == len(labels) == top1["n"]
        expected = np.zeros((3, 3), dtype=int)
        np.add.at(expected, (truth, predicted), 1)
        assert top1["confusion"] == expected.tolist()
        assert [r["prompts"] for r in rows if r["query"] == list(query) and "class" in r] == \
            [[t.format(n) for t in templates] for n in NAMES]
    assert {r["target"] for r in rows} == {"class"} and {r["task"] for r in rows} == {"zero_shot_classification"}


def test_classes_and_templates_from_files_and_labels_given_as_names(tmp_path):
    rng = np.random.default_rng(1)
    labels = ["cat", "dog", "dog", "cat", "bird", "dog"]
    ctx = context({"test": labels}, {"test": {"a": unit_rows(rng, 6), "b": unit_rows(rng, 6)}}, label_names=None)
    (tmp_path / "classes.txt").write_text("# one per line\ndog\ncat\n\nbird\n")
    (tmp_path / "templates.txt").write_text("a photo of a {}\na {}\n")
    cfg = ZeroShotClassificationConfig(classes=str(tmp_path / "classes.txt"), templates=str(tmp_path / "templates.txt"),
                                       queries=[["a", "b"]])
    rows = ZeroShotClassification(cfg)(ctx)
    assert {r.get("class") for r in rows} == {None, "dog", "cat", "bird"}
    assert {tuple(r["query"]) for r in rows} == {("a", "b")}
    by_labels = ZeroShotClassification(ZeroShotClassificationConfig(queries=[["a"]]))(ctx)  # the labels themselves
    assert {r.get("class") for r in by_labels} == {None, "bird", "cat", "dog"}


def test_report_draws_the_confusion_matrices_and_keeps_their_counts_in_json(tmp_path):
    rng = np.random.default_rng(5)
    labels = [i % 3 for i in range(12)]
    ctx = context({"test": labels}, {"test": {"a": unit_rows(rng, 12), "b": unit_rows(rng, 12)}})
    rows = ZeroShotClassification(ZeroShotClassificationConfig(queries=[["a"], ["a", "b"]]))(ctx)
    out = write_report(tmp_path, rows, ["a note"])
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "report.md").read_text()
    assert "![confusion](confusion.png)" in markdown and "- a note" in markdown
    assert "confusion" not in markdown.splitlines()[2] and "[[" not in markdown  # matrices stay out of the table
    saved = [r for r in json.loads((out / "report.json").read_text()) if "confusion" in r]
    assert [r["query"] for r in saved] == [["a"], ["a", "b"]] and all(np.sum(r["confusion"]) == 12 for r in saved)


def test_integer_class_names_get_one_note_with_the_prompt_they_made():
    rng = np.random.default_rng(4)
    labels = [0, 1, 7, 3, 2, 7]
    ctx = context({"test": labels}, {"test": {"a": unit_rows(rng, 6), "b": unit_rows(rng, 6)}}, label_names=None)
    with pytest.warns(Notice) as caught:  # three queries (a, b, a+b), one note
        rows = ZeroShotClassification(ZeroShotClassificationConfig(templates=["a handwritten {}"]))(ctx)
    notes = [str(w.message) for w in caught if issubclass(w.category, Notice)]
    assert len(notes) == 1 and "integer labels (0, 1, 2, ...)" in notes[0] and "'a handwritten 7'" in notes[0]
    assert {r["class"]: r["prompts"] for r in rows if "class" in r}["7"] == ["a handwritten 7"]
    named = context({"test": labels}, {"test": {"a": unit_rows(rng, 6), "b": unit_rows(rng, 6)}},
                    label_names=[f"digit {i}" for i in range(8)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", Notice)  # names given: no note
        ZeroShotClassification(ZeroShotClassificationConfig())(named)


def test_the_note_reaches_the_report_notes_once():
    rng = np.random.default_rng(6)
    ctx = context({"test": [0, 1, 2, 1]}, {"test": {"a": unit_rows(rng, 4), "b": unit_rows(rng, 4)}}, label_names=None)
    raw = read_yaml(RECIPE)
    raw["eval"] = [{"plugin": "zero_shot_classification"}, {"plugin": "zero_shot_classification", "top_k": [2]}]
    recipe = validate_recipe(raw, "test recipe")
    notes: list[str] = []
    with pytest.warns(Notice):
        rows = run_evaluators(recipe, ctx.parts, default_plugins(), torch.device("cpu"), "test", notes)
    assert len(notes) == 1 and notes[0].startswith("zero_shot_classification: the class names are the integer")
    assert {r["class"] for r in rows if "class" in r} == {"0", "1", "2"}


def test_classification_errors_say_what_to_do(tmp_path):
    rng = np.random.default_rng(2)
    ctx = context({"test": [0, 1, 7]}, {"test": {"a": unit_rows(rng, 3), "b": unit_rows(rng, 3)}})
    with pytest.raises(PolyalignError, match="row 2 of split 'test' has label 7, which is neither a class number"):
        ZeroShotClassification(ZeroShotClassificationConfig())(ctx)
    with pytest.raises(PolyalignError, match="'words' is not a modality of the model"):
        ZeroShotClassification(ZeroShotClassificationConfig(text="words"))(ctx)
    with pytest.raises(PolyalignError, match="cannot read .*missing.txt"):
        ZeroShotClassification(ZeroShotClassificationConfig(classes=str(tmp_path / "missing.txt")))(ctx)
    with pytest.raises(ValueError, match="exactly one"):
        ZeroShotClassificationConfig(templates=["no slot"])


def probe_data(seed: int = 3):
    """a separates the three classes (a class centre plus noise); b is noise."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng, 3) * 3
    labels, emb = {}, {}
    for split, n in (("train", 60), ("val", 30), ("test", 30)):
        y = [i % 3 for i in range(n)]
        labels[split] = y
        emb[split] = {"a": centres[y] + rng.normal(scale=1.0, size=(n, D)), "b": rng.normal(size=(n, D))}
    return labels, emb


@pytest.mark.slow
def test_linear_probe_chooses_c_on_val_and_equals_scikit_learn():
    labels, emb = probe_data()
    cs = [0.001, 1.0, 100.0]
    rows = LinearProbe(LinearProbeConfig(cs=cs, features=[["a"], ["b", "a"]]))(context(labels, emb))
    f32 = {s: {m: v.astype(np.float32).astype(np.float64) for m, v in e.items()} for s, e in emb.items()}
    for query, feats in {("a",): lambda e: e["a"], ("a", "b"): lambda e: np.hstack([e["a"], e["b"]])}.items():
        models = [LogisticRegression(C=c, max_iter=1000).fit(feats(f32["train"]), labels["train"]) for c in cs]
        val = [np.mean(m.predict(feats(f32["val"])) == labels["val"]) for m in models]
        best = int(np.argmax(val))
        got = {r["metric"]: r for r in rows if r["query"] == list(query)}
        assert got["chosen_C"]["value"] == cs[best] and got["accuracy"]["shots"] == "all"
        assert "C" not in got["accuracy"]  # a result is a metric row, never a field that splits rows
        assert got["accuracy"]["value"] == pytest.approx(np.mean(models[best].predict(feats(f32["test"]))
                                                                 == labels["test"]))
    default = LinearProbe(LinearProbeConfig(cs=[1.0]))(context(labels, emb))
    assert {tuple(r["query"]) for r in default} == {("text",), ("a",), ("b",), ("a", "b", "text")}
    accuracy = {"+".join(r["query"]): r["value"] for r in default if r["metric"] == "accuracy"}
    assert accuracy["a"] > 0.8 and accuracy["b"] < 0.6  # a holds the class, b does not


def test_few_shot_probes_draw_k_rows_per_class():
    y = np.array([0] * 10 + [1] * 10 + [2] * 2)
    rows = few_shot_rows(y, 3, np.random.default_rng(0))
    assert [int((y[rows] == c).sum()) for c in range(3)] == [3, 3, 2] and len(set(rows.tolist())) == 8
    labels, emb = probe_data(seed=4)
    out = LinearProbe(LinearProbeConfig(features=[["a"]], shots=[1, 5], draws=2, cs=[1.0]))(context(labels, emb))
    shots = {(r["shots"], r["metric"]): r["value"] for r in out}
    assert set(shots) == {(s, m) for s in ("all", 1, 5) for m in ("accuracy", "mean_per_class_accuracy")}
    assert shots[(5, "accuracy")] > 1 / 3  # above chance from 15 rows


def test_linear_probe_needs_val_to_choose_c():
    labels, emb = probe_data()
    labels["val"], emb["val"] = [], {"a": np.zeros((0, D)), "b": np.zeros((0, D))}
    with pytest.raises(PolyalignError, match="chooses C on the val split"):
        LinearProbe(LinearProbeConfig(features=[["a"]]))(context(labels, emb))
    assert LinearProbe(LinearProbeConfig(features=[["a"]], cs=[1.0]))(context(labels, emb))
