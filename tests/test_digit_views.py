"""Dataset digit_views: six feature families of the same scikit-learn digits, from the formulas."""

from __future__ import annotations

import numpy as np
import pytest

import polyalign
from polyalign.plugins.datasets.digit_views import VIEWS, digit_views, load_digit_images


def test_each_view_is_its_feature_family_of_the_one_image():
    from scipy.fft import dctn

    images, digits = load_digit_images()
    assert images.shape == (1797, 8, 8) and images.max() == 16 and np.bincount(digits).min() >= 170
    img = images[:3]
    views = digit_views(img, list(VIEWS))
    x = img[1]
    assert np.array_equal(views["pixels"][1], x.reshape(-1))
    assert np.allclose(views["zones"][1].reshape(4, 4)[2, 3], x[4:6, 6:8].mean())
    assert np.allclose(views["profiles"][1], np.concatenate([x.sum(1), x.sum(0)]))
    gy, gx = np.gradient(x)
    assert np.isclose(views["gradients"][1].sum(), np.hypot(gx, gy).sum())  # every pixel's gradient in one bin
    assert np.allclose(views["dct"][1][:2], [dctn(x, norm="ortho")[0, 0], dctn(x, norm="ortho")[0, 1]])
    ys, xs = np.mgrid[:8, :8]
    assert np.allclose(views["moments"][1][:3], [(x * ys).sum() / x.sum(), (x * xs).sum() / x.sum(), x.sum()])
    assert {v: views[v].shape[1] for v in VIEWS} == {"pixels": 64, "zones": 16, "profiles": 16, "gradients": 32,
                                                     "dct": 21, "moments": 26}


def test_splits_are_disjoint_standardised_on_train_and_labelled():
    data = polyalign.build("dataset", "digit_views", views=["pixels", "dct"], n_val=100, n_test=200, seed=3)
    train, val, test = (data.split(s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (1497, 100, 200) and data.modalities == ("pixels", "dct")
    assert not {s["id"] for s in train} & {s["id"] for s in test}
    dct = np.stack([s["dct"] for s in train])
    assert np.allclose(dct.mean(0), 0, atol=1e-5) and np.allclose(dct.std(0), 1, atol=1e-3)
    assert {s["label"] for s in test} <= set(range(10))


def test_a_repeated_view_or_an_empty_train_split_is_refused():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="each view may appear once"):
        polyalign.build("dataset", "digit_views", views=["pixels", "pixels"])
    with pytest.raises(polyalign.core.errors.PolyalignError, match="leaves none to train on"):
        polyalign.build("dataset", "digit_views", n_val=900, n_test=900)


def test_the_shipped_recipe_validates():
    from conftest import RECIPES

    recipe = polyalign.load_recipe(RECIPES / "digit-views.yaml")
    assert list(recipe.modalities) == list(VIEWS) and len(recipe.eval) == 6
