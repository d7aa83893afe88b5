"""Missing modalities: the evaluator's subsets, metrics and intervals on known embeddings;
training with holes and with train-time dropout; `polyalign eval` outputs; Symile on XOR."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hand_made import hand_made_context
from PIL import Image

import polyalign
from polyalign.cli import main
from polyalign.core.assemble import assemble
from polyalign.core.plugin_manager import make_plugins
from polyalign.core.recipe import validate_recipe
from polyalign.plugins.evaluators.missing_modality import (
    MissingModality,
    MissingModalityConfig,
    chance_metrics,
    query_subsets,
    resample_means,
)
from polyalign.plugins.evaluators.zero_shot import ZeroShot, ZeroShotConfig
from polyalign.plugins.losses.clip import ClipLoss

RECIPES = Path(__file__).resolve().parents[1] / "polyalign" / "recipes"

# ---------------------------------------------------------------- a hand-made model


def brute_force(scores: np.ndarray, correct: np.ndarray, ks=(1, 5)) -> dict[str, float]:
    """Metrics from a (queries x candidates) score matrix in float64, one query at a time."""
    hits = {k: [] for k in ks}
    rr = []
    for s, c in zip(scores, correct):
        best = s[c].max()
        rank = 1 + int(((s >= best) & ~c).sum())  # ties count against the correct candidate
        for k in ks:
            hits[k].append(rank <= k)
        rr.append(1.0 / rank)
    out = {("accuracy" if k == 1 else f"top{k}"): float(np.mean(hits[k])) for k in ks}
    out["mrr"] = float(np.mean(rr))
    return out


def rows_of(rows, **where):
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def value(rows, **where):
    (row,) = rows_of(rows, **where)
    return row["value"]


@pytest.fixture(scope="module")
def known():
    """Three modalities, 40 rows: b is read perfectly from a; c is noise; b+c is noisy."""
    rng = np.random.default_rng(3)
    n = 40
    b = np.eye(n)
    a = 2.0 * np.eye(n) + 0.1 * rng.random((n, n))  # the diagonal wins: a predicts b exactly
    c = rng.normal(size=(n, n))
    return {"a": a, "b": b, "c": c}


def test_every_non_empty_subset_of_the_other_modalities():
    assert query_subsets(["a", "c"]) == [("a",), ("c",), ("a", "c")]
    assert len(query_subsets(list("abcde"))) == 2 ** 5 - 1
    rng = np.random.default_rng(0)
    emb = {m: rng.normal(size=(12, 6)) for m in "wxyz"}
    cfg = MissingModalityConfig(targets="all", rates=[], resamples=20)
    rows = MissingModality(cfg)(hand_made_context(emb))
    for t in "wxyz":
        subsets = {tuple(r["query"]) for r in rows_of(rows, target=t, metric="accuracy")}
        others = [m for m in "wxyz" if m != t]
        assert subsets == {s for k in (1, 2, 3) for s in itertools.combinations(others, k)}
        assert len(rows_of(rows, target=t, metric="mrr")) == 2 ** 3 - 1
    assert {r["task"] for r in rows} == {"missing_modality"}


def test_subset_metrics_equal_brute_force(known):
    ctx = hand_made_context(known)
    rows = MissingModality(MissingModalityConfig(target="b", rates=[], resamples=50))(ctx)
    diag = np.eye(40, dtype=bool)
    for query in (["a"], ["c"], ["a", "c"]):
        scores = sum(known[q] @ known["b"].T for q in query)
        expected = brute_force(scores, diag)
        for metric, v in expected.items():
            assert value(rows, query=query, metric=metric) == pytest.approx(v, abs=1e-12)
    assert value(rows, query=["a"], metric="accuracy") == 1.0
    assert value(rows, query=["c"], metric="accuracy") < 0.3
    # the score is the loss's own rule: CLIP sums the query modalities' dot products
    assert rows_of(rows, query=["a", "c"], metric="accuracy")[0]["n"] == 40


def test_bootstrap_interval_is_seeded_and_has_the_binomial_width():
    rng = np.random.default_rng(1)
    n = 400
    hits = torch.tensor(rng.random(n) < 0.5, dtype=torch.float64)
    values = hits[None, None, :]  # one metric, one subset
    gen = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731
    means = resample_means(values, torch.empty(0), 4000, gen(0))[0]
    p = float(hits.mean())
    se = math.sqrt(p * (1 - p) / n)
    assert float(means.mean()) == pytest.approx(p, abs=4 * se / math.sqrt(4000) + 1e-3)
    low, high = np.quantile(means.numpy(), [0.025, 0.975])
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert torch.equal(means, resample_means(values, torch.empty(0), 4000, gen(0))[0])
    assert not torch.equal(means, resample_means(values, torch.empty(0), 4000, gen(1))[0])


def test_intervals_in_rows(known):
    ctx = hand_made_context(known)
    rows = MissingModality(MissingModalityConfig(target="b", rates=[0.5], resamples=500, seed=7))(ctx)
    perfect = rows_of(rows, task="missing_modality", query=["a"], metric="accuracy")[0]
    assert perfect["ci_low"] == perfect["ci_high"] == 1.0  # every resample is all hits
    for r in rows:
        assert r["ci_low"] <= r["value"] + 1e-9 and r["value"] <= r["ci_high"] + 1e-9
        assert r["resamples"] == 500
    again = MissingModality(MissingModalityConfig(target="b", rates=[0.5], resamples=500, seed=7))(ctx)
    assert again == rows


def test_dropout_curve_is_the_exact_expectation(known):
    ctx = hand_made_context(known)
    rates = [0.0, 0.25, 0.5, 0.75, 1.0]
    rows = MissingModality(MissingModalityConfig(target="b", rates=rates, resamples=200))(ctx)
    curve = rows_of(rows, task="dropout_curve")
    assert {r["dropped"] for r in curve} == {"a", "c", "all"}
    assert all(r["query"] == ["a", "c"] and r["n"] == 40 and r["candidates"] == 40 for r in curve)
    chance = {"accuracy": 1 / 40, "top5": 5 / 40, "mrr": sum(1 / r for r in range(1, 41)) / 40}
    for metric in ("accuracy", "top5", "mrr"):
        full = value(rows, task="missing_modality", query=["a", "c"], metric=metric)
        only = {m: value(rows, task="missing_modality", query=[m], metric=metric) for m in "ac"}
        for r in rates:
            # dropping a leaves c, dropping c leaves a
            assert value(curve, dropped="a", rate=r, metric=metric) == pytest.approx((1 - r) * full + r * only["c"])
            assert value(curve, dropped="c", rate=r, metric=metric) == pytest.approx((1 - r) * full + r * only["a"])
            # both independently: a row left with nothing is a random guess
            expected = ((1 - r) ** 2 * full + r * (1 - r) * (only["a"] + only["c"]) + r * r * chance[metric])
            assert value(curve, dropped="all", rate=r, metric=metric) == pytest.approx(expected)
        assert value(curve, dropped="all", rate=1.0, metric=metric) == pytest.approx(chance[metric])
        assert rows_of(curve, dropped="all", rate=1.0, metric=metric)[0]["chance"] == pytest.approx(chance[metric])


def test_two_modalities_dropping_the_only_query_falls_to_chance():
    rng = np.random.default_rng(2)
    emb = {"x": np.eye(10) + 0.01 * rng.random((10, 10)), "y": np.eye(10)}
    rows = MissingModality(MissingModalityConfig(target="y", rates=[0.0, 0.5, 1.0], resamples=200))(
        hand_made_context(emb))
    assert {r["dropped"] for r in rows_of(rows, task="dropout_curve")} == {"x"}  # no "all" line for one query
    assert value(rows, task="dropout_curve", rate=0.0, metric="accuracy") == 1.0
    assert value(rows, task="dropout_curve", rate=0.5, metric="accuracy") == pytest.approx(0.5 + 0.5 / 10)
    assert value(rows, task="dropout_curve", rate=1.0, metric="accuracy") == pytest.approx(0.1)


@pytest.mark.parametrize("n_candidates,n_correct", [(5, 1), (5, 2), (6, 3), (4, 4)])
def test_chance_metrics_equal_enumeration_of_every_ranking(n_candidates, n_correct):
    ranks = []
    for perm in itertools.permutations(range(n_candidates)):  # candidate perm[p] at position p
        ranks.append(1 + next(p for p, c in enumerate(perm) if c < n_correct))
    ranks = np.array(ranks, dtype=np.float64)
    got = chance_metrics(torch.tensor([n_correct, 0]), n_candidates, [1, 2, 5])
    assert float(got["accuracy"][0]) == pytest.approx(np.mean(ranks <= 1), abs=1e-12)
    assert float(got["top2"][0]) == pytest.approx(np.mean(ranks <= 2), abs=1e-12)
    assert float(got["top5"][0]) == pytest.approx(np.mean(ranks <= 5), abs=1e-12)
    assert float(got["mrr"][0]) == pytest.approx(np.mean(1.0 / ranks), abs=1e-12)
    assert all(float(v[1]) == 0.0 for v in got.values())  # no correct candidate


def test_label_match_with_split_candidates():
    rng = np.random.default_rng(4)
    n = 30
    labels = [i % 3 for i in range(n)]
    emb = {"a": rng.normal(size=(n, 5)), "b": rng.normal(size=(n, 5))}
    ctx = hand_made_context(emb, labels=labels)
    rows = MissingModality(MissingModalityConfig(target="b", candidates="split", match="label", rates=[],
                                                 resamples=20))(ctx)
    correct = np.array(labels)[:, None] == np.array(labels)[None, :]
    expected = brute_force(emb["a"] @ emb["b"].T, correct)
    for metric, v in expected.items():
        assert value(rows, metric=metric) == pytest.approx(v, abs=1e-6)
    assert value(rows, metric="accuracy") > 1 / 3 - 0.25  # sanity: comparable with chance 1/3
    assert rows_of(rows, metric="accuracy")[0]["chance"] == pytest.approx(1 / 3)


def test_zero_shot_query_and_match_options_agree_with_the_subsets(known):
    ctx = hand_made_context(known)
    subsets = MissingModality(MissingModalityConfig(target="b", rates=[], resamples=20))(ctx)
    for query in (["a"], ["c"], ["a", "c"]):
        zs = ZeroShot(ZeroShotConfig(target="b", query=query))(ctx)
        for r in zs:
            assert r["value"] == value(subsets, query=query, metric=r["metric"])
    with pytest.raises(polyalign.core.errors.PolyalignError, match="other than the target"):
        ZeroShot(ZeroShotConfig(target="b", query=["b", "a"]))(ctx)
    with pytest.raises(polyalign.core.errors.PolyalignError, match="not a modality"):
        MissingModality(MissingModalityConfig(targets=["q"]))(ctx)


def test_rows_with_holes_score_each_subset_on_its_own_rows(known):
    present = {m: np.ones(40, bool) for m in "abc"}
    present["c"][:10] = False  # rows 0-9 lack c
    ctx = hand_made_context(known, present=present)
    rows = MissingModality(MissingModalityConfig(target="b", rates=[0.5], resamples=50))(ctx)
    assert rows_of(rows, query=["a"], metric="accuracy")[0]["n"] == 40
    assert rows_of(rows, query=["c"], metric="accuracy")[0]["n"] == 30
    assert rows_of(rows, task="dropout_curve", dropped="a", metric="accuracy")[0]["n"] == 30
    # candidates: only the rows that have b (all 40); c's scores use rows 10..39
    diag = np.eye(40, dtype=bool)[10:]
    expected = brute_force(known["c"][10:] @ known["b"].T, diag)
    assert value(rows, query=["c"], metric="mrr") == pytest.approx(expected["mrr"], abs=1e-6)


def test_learned_placeholder_stands_in_for_the_modalities_left_out(known):
    ctx = hand_made_context(known, missing="learned")
    model = ctx.parts.model
    with torch.no_grad():
        model.missing_embeddings["c"].copy_(torch.tensor(known["b"][7] * 5.0))  # pulls every query to candidate 7
    rows = MissingModality(MissingModalityConfig(target="b", rates=[], resamples=20))(ctx)
    placeholder = (known["b"][7] * 5.0)[None, :]
    scores = known["a"] @ known["b"].T + placeholder @ known["b"].T
    expected = brute_force(scores, np.eye(40, dtype=bool))
    assert value(rows, query=["a"], metric="accuracy") == pytest.approx(expected["accuracy"])
    assert expected["accuracy"] < 0.1  # the placeholder really changed the ranking


def test_config_is_validated():
    with pytest.raises(ValueError, match="either target"):
        MissingModalityConfig(target="a", targets=["b"])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        MissingModalityConfig(rates=[0.5, 1.5])
    assert MissingModalityConfig(rates=[0.5, 0.0, 0.5]).rates == [0.0, 0.5]


def test_report_table_has_a_line_per_query_and_a_column_per_metric(known):
    from polyalign.core.report_table import pivot_rows

    rows = MissingModality(MissingModalityConfig(target="b", rates=[0.0, 0.5], resamples=50))(hand_made_context(known))
    subsets, curve = pivot_rows(rows, interval_metrics={"accuracy"})
    assert subsets.task == "missing_modality" and curve.task == "dropout_curve"
    assert subsets.header == ["target", "query", "accuracy", "top5", "mrr"]
    assert [line[:2] for line in subsets.lines] == [["b", "a"], ["b", "c"], ["b", "a+c"]]
    perfect = rows_of(rows, task="missing_modality", query=["a"], metric="accuracy")[0]
    assert subsets.lines[0][2] == f"{perfect['value']:.3f} [{perfect['ci_low']:.3f}, {perfect['ci_high']:.3f}]"
    assert "[" not in subsets.lines[0][3]  # intervals only where asked
    assert subsets.constants == {"n": 40, "candidates": 40, "resamples": 50, "chance accuracy": "0.025"}
    assert curve.header[:4] == ["target", "query", "dropped", "rate"] and len(curve.lines) == 3 * 2


# ---------------------------------------------------------------- training with holes


class RecordingClip(ClipLoss):
    """CLIP that records the masks it is given (``None`` when the model fills placeholders)."""

    name = "recording_clip"
    calls: list = []

    def forward(self, embeddings, present=None):
        RecordingClip.calls.append((self.training, {m: z.shape[0] for m, z in embeddings.items()},
                                    None if present is None else {m: p.clone() for m, p in present.items()}))
        return super().forward(embeddings, present)


class HoleyXor:
    """XOR data where each training sample lacks one modality in turn (no complete tuple)."""

    name = "holey_xor"
    modalities = ("a", "b", "c")
    root = None

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.splits = {}
        for name, n in (("train", 192), ("val", 64), ("test", 64)):
            a, b = rng.integers(0, 2, (2, n, 4)).astype(np.float32)
            rows = [{"a": a[i], "b": b[i], "c": (a[i] != b[i]).astype(np.float32)} for i in range(n)]
            if name == "train":
                for i, r in enumerate(rows):
                    del r["abc"[i % 3]]
            self.splits[name] = rows

    def split(self, name):
        return self.splits[name]


class TestPlugins:
    @polyalign.hookimpl
    def register_datasets(self, register):
        register(HoleyXor)

    @polyalign.hookimpl
    def register_losses(self, register):
        register(RecordingClip)


def _holey_recipe(strategy: str, train_rate: dict | None = None, data: str = "holey_xor") -> dict:
    return {"name": f"holes-{strategy}", "seed": 0, "data": {"plugin": data},
            "modalities": {m: {"encoder": {"plugin": "vector", "hidden": []}} for m in "abc"},
            "model": {"embed_dim": 8}, "loss": {"plugin": "recording_clip"},
            "missing": {"strategy": strategy, "train_rate": train_rate or {}},
            "train": {"epochs": 1, "batch_size": 64, "lr": 0.01, "warmup_steps": 0, "log_every": 1},
            "eval": [{"plugin": "missing_modality", "targets": ["b"], "rates": [0.0, 0.5], "resamples": 20}]}


@pytest.mark.parametrize("strategy", ["drop", "learned"])
@pytest.mark.slow
def test_samples_with_holes_train_without_being_dropped(tmp_path, strategy):
    plugins = make_plugins(extra=[TestPlugins()])
    recipe = validate_recipe(_holey_recipe(strategy), plugins=plugins)
    RecordingClip.calls.clear()
    run = polyalign.train(recipe, out=tmp_path, plugins=plugins)
    train_calls = [c for c in RecordingClip.calls if c[0]]
    assert len(train_calls) == 3  # 192 samples / 64: every batch kept, none emptied
    assert all(set(sizes.values()) == {64} for _, sizes, _ in train_calls)
    if strategy == "drop":
        # the loss is told which rows lack what: every row has exactly two of the three
        for _, _, present in train_calls:
            assert torch.equal(sum(p.long() for p in present.values()), torch.full((64,), 2))
        assert all(sum(int((~c[2][m]).sum()) for c in train_calls) == 64 for m in "abc")
    else:
        assert all(present is None for _, _, present in train_calls)  # placeholders: complete tuples
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in steps if r.get("kind") == "step")
    report = json.loads((run / "eval" / "report.json").read_text())
    assert {r["task"] for r in report} == {"missing_modality", "dropout_curve"}
    if strategy == "learned":  # the placeholders were trained: they moved from their initial values
        from safetensors.torch import load_file

        weights = load_file(str(run / "checkpoints" / "last" / "model.safetensors"))
        initial = assemble(recipe, plugins).model.missing_embeddings
        for m in "abc":
            moved = (weights[f"model.missing_embeddings.{m}"] - initial[m].detach()).abs().max()
            assert float(moved) > 1e-3


def test_train_rate_drops_only_that_modality_and_only_in_training(tmp_path):
    plugins = make_plugins(extra=[TestPlugins()])
    raw = _holey_recipe("drop", {"a": 0.5}, data="xor")
    raw["data"] = {"plugin": "xor", "n_train": 512, "n_val": 128, "n_test": 64}
    raw["train"]["epochs"] = 2
    RecordingClip.calls.clear()
    polyalign.train(validate_recipe(raw, plugins=plugins), out=tmp_path, plugins=plugins)
    train_calls = [c[2] for c in RecordingClip.calls if c[0]]
    val_calls = [c[2] for c in RecordingClip.calls if not c[0]]
    assert len(train_calls) == 16 and val_calls
    kept_a = torch.cat([p["a"] for p in train_calls]).double().mean()
    assert 0.42 < float(kept_a) < 0.58  # 1024 Bernoulli(0.5) draws
    assert all(bool(p[m].all()) for p in train_calls for m in "bc")
    assert all(bool(p[m].all()) for p in val_calls for m in "abc")


# ---------------------------------------------------------------- polyalign eval


@pytest.mark.slow
def test_polyalign_eval_writes_json_markdown_and_both_plots(tmp_path, tiny_xor, capsys):
    run = polyalign.train(RECIPES / "xor-clip.yaml", out=tmp_path, overrides=tiny_xor + ["train.epochs=1"])
    eval_dir = run / "eval"
    for f in eval_dir.iterdir():
        f.unlink()
    capsys.readouterr()
    # the recipe has only zero_shot; --add runs missing_modality on the trained run as well
    assert main(["eval", str(run), "--add", "{plugin: missing_modality, resamples: 50}"]) == 0
    shown = capsys.readouterr().out
    assert "missing_modality" in shown and "dropout_curve" in shown and "accuracy" in shown
    rows = json.loads((eval_dir / "report.json").read_text())
    assert len(rows_of(rows, task="zero_shot")) == 3
    assert len(rows_of(rows, task="missing_modality")) == 3 * 3 * 3  # targets x subsets x metrics
    assert len(rows_of(rows, task="dropout_curve")) == 3 * 3 * 4 * 3  # targets x lines x rates x metrics
    markdown = (eval_dir / "report.md").read_text()
    section = markdown[markdown.index("## missing_modality"):markdown.index("## dropout_curve")]
    assert "| target | query | accuracy |" in section and "| b | a+c | " in section and "rate" not in section
    assert "![heatmap](heatmap.png)" in markdown and "![dropout_curve](dropout_curve.png)" in markdown
    for name, min_size in (("heatmap.png", (600, 300)), ("dropout_curve.png", (900, 300))):
        with Image.open(eval_dir / name) as img:
            assert img.format == "PNG" and img.size[0] >= min_size[0] and img.size[1] >= min_size[1]
            assert len(img.convert("RGB").getcolors(1 << 20)) > 50  # a real figure, not a blank page
    assert main(["eval", str(run), "--add", "{plugin: missing_modality, rates: [2]}"]) == 2
    assert "eval.1.rates" in capsys.readouterr().err
    # evaluating again without --add: no dropout rows, so the stale curve is removed
    assert main(["eval", str(run)]) == 0
    assert (eval_dir / "heatmap.png").is_file() and not (eval_dir / "dropout_curve.png").exists()


# ---------------------------------------------------------------- Symile on XOR


def _has_loss(name: str) -> bool:
    return name in make_plugins().registry.names("loss")


@pytest.mark.skipif(not _has_loss("symile"), reason="the symile loss plugin is not registered yet")
@pytest.mark.slow
def test_symile_predicts_b_from_a_and_c_jointly_and_from_either_alone_at_chance(tmp_path):
    run = polyalign.train(RECIPES / "xor-symile-missing.yaml", out=tmp_path,
                          overrides=["data.n_train=3000", "data.n_val=100", "data.n_test=500", "train.epochs=8",
                                     "train.lr=0.03", "eval.0.targets=[b]", "eval.0.resamples=200",
                                     "eval.0.rates=[0.0, 0.5]"])
    rows = json.loads((run / "eval" / "report.json").read_text())
    target_b = rows_of(rows, task="missing_modality", target="b", metric="accuracy")
    by_query = {"+".join(r["query"]): r for r in target_b}
    assert by_query["a+c"]["value"] >= 0.95
    for alone in ("a", "c"):
        r = by_query[alone]
        assert r["chance"] == pytest.approx(1 / 32)
        assert r["ci_low"] <= 1 / 32 <= r["ci_high"] or abs(r["value"] - 1 / 32) < 0.02, r
