"""``polyalign plot RUN --embeddings``: a trained run's test embeddings of every modality in 2-D."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import polyalign
from polyalign.cli import main
from polyalign.core.errors import Notice
from polyalign.evaluation.embedding_plot import project_2d

RECIPE = Path(__file__).resolve().parents[1] / "polyalign" / "recipes" / "digit-views-3.yaml"
TINY = ["data.n_val=40", "data.n_test=60", "train.epochs=1", "train.warmup_steps=0", "eval=[]"]


@pytest.mark.slow
def test_cli_plot_embeddings_writes_a_png(tmp_path, capsys):
    run = polyalign.train(RECIPE, out=tmp_path / "runs", overrides=TINY)
    assert main(["plot", str(run), "--embeddings"]) == 0
    png = run / "embeddings.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 30_000
    assert f"plot: {png}" in capsys.readouterr().out.replace("\n", "")
    assert main(["plot", str(run), str(run), "--embeddings"]) == 2
    assert "plot --embeddings draws one run's embeddings; got 2 runs" in capsys.readouterr().err


def test_without_scikit_learn_the_projection_is_pca_and_says_so(monkeypatch):
    rng = np.random.default_rng(0)
    points = rng.normal(size=(40, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)  # import fails as when absent
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        xy, method = project_2d(points, seed=0)
    assert method == "PCA" and any(issubclass(w.category, Notice) and "t-SNE needs scikit-learn" in str(w.message)
                                   for w in caught)
    centred = points - points.mean(0)
    top = np.linalg.eigh(np.cov(centred.T))[0][::-1][:2]  # the two largest variances
    assert np.var(xy, axis=0, ddof=1) == pytest.approx(top, rel=1e-9)
