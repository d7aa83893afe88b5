"""model.balance: each term of a list of losses sends the same gradient norm to a shared encoder."""

import pytest
import torch

from polyalign.core.assemble import build_loss
from polyalign.core.errors import PolyalignError
from polyalign.core.gradient_balance import GradientBalance
from polyalign.core.loss import WeightedLoss
from polyalign.core.plugin_manager import default_plugins
from polyalign.core.recipe import RecipeError, load_recipe
from polyalign.shipped import resolve_recipe_path
from polyalign.training.auto_values import resolved_autos


def term_grads(balance: GradientBalance, z: torch.Tensor, scales: dict[str, float]) -> dict[str, torch.Tensor]:
    """The gradient each term (loss = scale * sum of its block) sends back to ``z``, through ``balance``."""
    return {t: torch.autograd.grad((s * balance.attach("m", t, z)).sum(), z)[0] for t, s in scales.items()}


def test_terms_send_the_mean_of_their_norms_once_every_term_was_seen():
    balance = GradientBalance(["clip", "symile"])
    z = torch.ones(4, 3, dtype=torch.float64, requires_grad=True)
    scales = {"clip": 5.0, "symile": 1.0}  # raw gradient norms: 5 * sqrt(12) and sqrt(12)
    first = term_grads(balance, z, scales)
    assert first["clip"].norm().item() == pytest.approx(5 * 12 ** 0.5)  # the other term not seen yet: as it is
    assert first["symile"].norm().item() == pytest.approx(3 * 12 ** 0.5)  # scaled to the mean, (5 + 1) / 2
    for _ in range(3):
        later = term_grads(balance, z, scales)
        for t in scales:
            assert later[t].norm().item() == pytest.approx(3 * 12 ** 0.5)
        assert torch.allclose(later["clip"], later["symile"])  # same direction here, so the same gradient


def test_norms_are_smoothed_over_steps_and_kept_per_modality():
    balance = GradientBalance(["a", "b"])
    z = torch.ones(2, 2, dtype=torch.float64, requires_grad=True)
    term_grads(balance, z, {"a": 1.0, "b": 1.0})
    grads = term_grads(balance, z, {"a": 3.0, "b": 1.0})  # a's gradient jumps: its smoothed norm moves 10%
    a_norm, b_norm = 0.9 * 2 + 0.1 * 6, 2.0
    target = (a_norm + b_norm) / 2
    assert grads["a"].norm().item() == pytest.approx(6 * target / a_norm)
    assert grads["b"].norm().item() == pytest.approx(target)
    other = torch.ones(2, 2, dtype=torch.float64, requires_grad=True)
    g = torch.autograd.grad((7 * balance.attach("other", "a", other)).sum(), other)[0]
    assert g.norm().item() == pytest.approx(14.0)  # a modality of its own: b not seen there yet


def recipe(*overrides: str):
    return load_recipe(resolve_recipe_path("xor-symile"), ["loss=[{plugin: clip}, {plugin: symile}]", *overrides])


def test_a_list_of_losses_balances_by_default_and_says_so():
    r = recipe()
    loss = build_loss(r, default_plugins())
    assert isinstance(loss, WeightedLoss) and loss.balance is not None
    autos = resolved_autos(r, loss, torch.device("cpu"))
    assert autos["model.balance"] == "gradients" and autos["model.spaces"] == "per_term"
    off = build_loss(recipe("model.balance=none"), default_plugins())
    assert off.balance is None
    shared = build_loss(recipe("model.spaces=shared"), default_plugins())
    assert shared.balance is None  # one space: no term's gradient is known apart from the others'


def test_balanced_training_steps_and_scoring_is_unchanged():
    torch.manual_seed(0)
    on = build_loss(recipe(), default_plugins())
    off = build_loss(recipe("model.balance=none"), default_plugins())
    off.load_state_dict(on.state_dict())
    z = {m: torch.nn.functional.normalize(torch.randn(8, 32), dim=-1).requires_grad_(True) for m in "abc"}
    for _ in range(2):
        out = on(z)
        grads = torch.autograd.grad(out.loss, list(z.values()))
        assert all(torch.isfinite(g).all() for g in grads)
    assert torch.allclose(on(z).loss, off(z).loss)  # the loss itself is the same; only its gradient differs
    with torch.no_grad():
        q = {"a": z["a"], "c": z["c"]}
        assert torch.allclose(on.score_tuples(q, {"b": z["b"]}), off.score_tuples(q, {"b": z["b"]}))


def test_gradients_asked_where_there_is_nothing_to_balance_is_refused_with_its_yaml_path():
    with pytest.raises(RecipeError, match="model.balance.*one loss"):
        load_recipe(resolve_recipe_path("xor-symile"), ["model.balance=gradients"])
    with pytest.raises(RecipeError, match="model.balance.*model.spaces: shared"):
        recipe("model.balance=gradients", "model.spaces=shared")
    with pytest.raises(PolyalignError, match="gave this list one shared space"):  # a head: none -> one space
        build_loss(recipe("model.balance=gradients", "model.head=none", "model.embed_dim=5"), default_plugins())
    with pytest.raises(PolyalignError, match="needs two or more terms in spaces"):
        clip = build_loss(load_recipe(resolve_recipe_path("xor-clip")), default_plugins())
        WeightedLoss({"clip": clip}, {"clip": 1.0}, balance=True)
