"""Evaluator ``retrieval``: the metric code against torchmetrics, the directions it ranks, tuple
candidates scored with each loss's rule, and `polyalign eval --add retrieval` on an old run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hand_made import OneModalityLoss, hand_made_context
from torchmetrics.retrieval import RetrievalHitRate, RetrievalMRR

import polyalign
from polyalign.cli import main
from polyalign.core.errors import PluginError
from polyalign.core.evaluator import per_query_metrics, ranks_of_correct, recall_and_rank
from polyalign.plugins.evaluators.retrieval import Retrieval, RetrievalConfig
from polyalign.plugins.losses.symile import SymileConfig, SymileLoss


def torchmetrics_values(scores: torch.Tensor, correct: torch.Tensor, ks=(1, 5, 10)) -> dict[str, float]:
    """Hit rate at each k and MRR from torchmetrics (each query row is one retrieval 'index')."""
    indexes = torch.arange(scores.shape[0])[:, None].expand_as(scores).reshape(-1)
    out = {}
    for k in ks:
        metric = RetrievalHitRate(top_k=k)
        out[f"R@{k}"] = float(metric(scores.reshape(-1), correct.reshape(-1), indexes=indexes))
    out["mrr"] = float(RetrievalMRR()(scores.reshape(-1), correct.reshape(-1), indexes=indexes))
    return out


def random_case(seed: int, n_q: int = 30, n_c: int = 25, ties: bool = False):
    g = torch.Generator().manual_seed(seed)
    # positive scores: torchmetrics' MRR treats a candidate scored <= 0 as not relevant
    scores = (torch.randint(1, 6, (n_q, n_c), generator=g).double() if ties
              else torch.rand(n_q, n_c, generator=g, dtype=torch.float64) + 0.01)
    correct = torch.rand(n_q, n_c, generator=g) < 0.08
    correct[torch.arange(n_q), torch.randint(n_c, (n_q,), generator=g)] = True  # at least one each
    return scores, correct


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recall_at_k_and_mrr_equal_torchmetrics(seed):
    scores, correct = random_case(seed)
    ranks = ranks_of_correct(scores, correct)
    ours = recall_and_rank(ranks)
    ours["mrr"] = float(per_query_metrics(ranks)["mrr"].mean())
    reference = torchmetrics_values(scores, correct)
    assert ours.keys() >= reference.keys()
    for name, value in reference.items():
        assert ours[name] == pytest.approx(value, abs=1e-6), name  # torchmetrics averages in float32
    assert ours["median_rank"] == pytest.approx(float(np.median(ranks.numpy())))
    assert ours["mean_rank"] == pytest.approx(float(ranks.double().mean()))


@pytest.mark.parametrize("seed", [3, 4])
def test_ties_count_against_the_correct_candidate(seed):
    """torchmetrics ranks by sorting the scores (its docs: the top k of ``preds``), which leaves
    the order of equal scores to the sort; we count every tie against the correct candidate: the
    same as torchmetrics once the correct candidates are placed after their equals."""
    scores, correct = random_case(seed, ties=True)
    ours = recall_and_rank(ranks_of_correct(scores, correct))
    correct_last = scores - 1e-6 * correct.double()
    reference = torchmetrics_values(correct_last, correct)
    for k in (1, 5, 10):
        assert ours[f"R@{k}"] == pytest.approx(reference[f"R@{k}"], abs=1e-6)
    assert any(torchmetrics_values(scores + 1e-6 * correct.double(), correct)[f"R@{k}"] > ours[f"R@{k}"]
               for k in (1, 5))  # the other tie order would flatter the model


def test_default_directions_are_each_modality_from_the_others_and_each_pair_both_ways():
    ctx = hand_made_context({m: np.eye(4) for m in "abc"})
    got = Retrieval(RetrievalConfig()).directions(ctx)
    assert got == [(["b", "c"], ["a"]), (["a"], ["b", "c"]), (["a", "c"], ["b"]), (["b"], ["a", "c"]),
                   (["a", "b"], ["c"]), (["c"], ["a", "b"]), (["a"], ["b"]), (["b"], ["a"]),
                   (["a"], ["c"]), (["c"], ["a"]), (["b"], ["c"]), (["c"], ["b"])]
    two = Retrieval(RetrievalConfig()).directions(hand_made_context({m: np.eye(4) for m in "ab"}))
    assert two == [(["b"], ["a"]), (["a"], ["b"])]
    one_way = RetrievalConfig(directions=[{"query": "a", "target": ["b", "c"]}], both_ways=False)
    assert Retrieval(one_way).directions(ctx) == [(["a"], ["b", "c"])]


@pytest.fixture(scope="module")
def three():
    rng = np.random.default_rng(7)
    return {m: rng.normal(size=(12, 5)) for m in "abc"}


def brute_rows(scores: np.ndarray) -> dict[str, float]:
    """R@k, median and mean rank of the diagonal of a score matrix, one query at a time."""
    ranks = np.array([1 + int((row > row[i]).sum() + (np.delete(row, i) == row[i]).sum())
                      for i, row in enumerate(scores)])
    out = {f"R@{k}": float(np.mean(ranks <= k)) for k in (1, 5, 10)}
    out.update(median_rank=float(np.median(ranks)), mean_rank=float(ranks.mean()))
    return out


def values(rows, target, query):
    return {r["metric"]: r["value"] for r in rows if r["target"] == target and r["query"] == query}


def test_rows_equal_brute_force_in_both_directions_and_for_tuples(three):
    rows = Retrieval(RetrievalConfig(directions=[{"query": ["a"], "target": ["b"]},
                                                 {"query": ["a"], "target": ["b", "c"]}]))(hand_made_context(three))
    a, b, c = (three[m].astype(np.float32).astype(np.float64) for m in "abc")
    for (target, query), scores in {("b", "a"): a @ b.T, ("a", "b"): b @ a.T,
                                    ("b+c", "a"): a @ b.T + a @ c.T,  # CLIP: sum over query x candidate pairs
                                    ("a", "b+c"): b @ a.T + c @ a.T}.items():
        got = values(rows, target, query.split("+"))
        assert got == pytest.approx(brute_rows(scores), abs=1e-6), (target, query)
    assert {r["n"] for r in rows} == {12} and {r["candidates"] for r in rows} == {12}


def test_tuple_candidates_use_the_losses_own_rule(three):
    rows = Retrieval(RetrievalConfig(directions=[{"query": "a", "target": ["b", "c"]}], both_ways=False))(
        hand_made_context(three, loss=SymileLoss(SymileConfig())))
    a, b, c = (three[m].astype(np.float32).astype(np.float64) for m in "abc")
    assert values(rows, "b+c", ["a"]) == pytest.approx(brute_rows(a @ (b * c).T), abs=1e-6)


def test_label_match_and_unique_candidates(three):
    labels = [i % 3 for i in range(12)]
    rows = Retrieval(RetrievalConfig(directions=[{"query": "a", "target": "b"}], both_ways=False,
                                     match="label"))(hand_made_context(three, labels=labels))
    a, b = (three[m].astype(np.float32).astype(np.float64) for m in "ab")
    scores = a @ b.T
    same = np.equal.outer(labels, labels)
    ranks = [1 + int((s[~ok] >= s[ok].max()).sum()) for s, ok in zip(scores, same)]
    assert values(rows, "b", ["a"])["R@1"] == pytest.approx(np.mean(np.array(ranks) <= 1))
    assert values(rows, "b", ["a"])["mean_rank"] == pytest.approx(np.mean(ranks))


def test_a_loss_that_ranks_one_modality_skips_default_tuples_and_refuses_named_ones(three):
    from polyalign.plugins.losses.clip import ClipConfig

    ctx = hand_made_context(three, loss=OneModalityLoss(ClipConfig()))
    with pytest.warns(UserWarning, match=r"tuple targets b\+c, a\+c, a\+b are left out"):
        rows = Retrieval(RetrievalConfig())(ctx)
    assert {r["target"] for r in rows} == {"a", "b", "c"}
    with pytest.raises(PluginError, match=r"cannot rank candidates made of b\+c"):
        Retrieval(RetrievalConfig(directions=[{"query": "a", "target": ["b", "c"]}]))(ctx)


def test_config_errors_name_the_problem(three):
    with pytest.raises(ValueError, match="a is both a query and a target"):
        RetrievalConfig(directions=[{"query": ["a"], "target": ["a", "b"]}])
    with pytest.raises(polyalign.core.errors.PolyalignError, match="'x' is not a modality of the model"):
        Retrieval(RetrievalConfig(directions=[{"query": "x", "target": "a"}]))(hand_made_context(three))


@pytest.mark.slow
def test_eval_add_retrieval_on_a_run_whose_recipe_lacks_it(tmp_path, tiny_xor, capsys):
    from conftest import RECIPES

    run = polyalign.train(RECIPES / "xor-symile.yaml", out=tmp_path, overrides=tiny_xor)
    assert not any(r["task"] == "retrieval" for r in json.loads((run / "eval" / "report.json").read_text()))
    assert main(["eval", str(run), "--add", "retrieval"]) == 0
    rows = json.loads((run / "eval" / "report.json").read_text())
    got = {(r["target"], "+".join(r["query"])) for r in rows if r["task"] == "retrieval"}
    assert ("b", "a+c") in got and ("a+c", "b") in got and ("a", "b") in got  # tuples, both ways, pairs
    assert {r["metric"] for r in rows if r["task"] == "retrieval"} == {"R@1", "R@5", "R@10", "median_rank",
                                                                      "mean_rank"}
    assert "evaluation" in capsys.readouterr().out and "retrieval" in (run / "eval" / "report.md").read_text()


@pytest.mark.slow
def test_eval_add_runs_only_the_added_evaluator_and_replaces_its_earlier_rows(tmp_path, tiny_xor):
    from conftest import RECIPES

    run = polyalign.train(RECIPES / "xor-symile.yaml", out=tmp_path, overrides=tiny_xor)
    report = run / "eval" / "report.json"
    rows = json.loads(report.read_text())
    assert rows and all(r["evaluator"] for r in rows)  # each row names the node that produced it
    rows[0]["value"] = 12345.0  # a recipe evaluator's row marked: re-running that evaluator would reset it
    report.write_text(json.dumps(rows))
    assert main(["eval", str(run), "--add", "retrieval"]) == 0
    first = json.loads(report.read_text())
    assert first[: len(rows)] == rows  # the recipe's evaluators were not run again
    added = [r for r in first if r["task"] == "retrieval"]
    assert added and {r["evaluator"] for r in added} == {"retrieval"}
    assert main(["eval", str(run), "--add", "retrieval"]) == 0
    again = json.loads(report.read_text())
    assert len(again) == len(first) and again[: len(rows)] == rows  # replaced, not duplicated
    ranks = json.loads((run / "eval" / "ranks.json").read_text())
    assert sum(e["evaluator"] == "retrieval" for e in ranks) == len({(e["task"], e["target"], tuple(e["query"]))
                                                                     for e in ranks if e["evaluator"] == "retrieval"})
    assert main(["eval", str(run), "--add", "{plugin: retrieval, top_k: [1]}"]) == 0  # other options: another node
    other = [r for r in json.loads(report.read_text()) if r["evaluator"].startswith("retrieval {")]
    assert other and {r["evaluator"] for r in other} == {'retrieval {"top_k": [1]}'}


def test_the_new_evaluators_are_listed_with_help():
    from polyalign.core.plugin_manager import default_plugins

    comps = {c.name: c for c in default_plugins().registry.components("evaluator")}
    assert {"retrieval", "zero_shot_classification", "linear_probe"} <= set(comps)
    assert all(comps[n].description for n in ("retrieval", "zero_shot_classification", "linear_probe"))
