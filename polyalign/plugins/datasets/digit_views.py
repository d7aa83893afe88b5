"""Dataset ``digit_views``: six feature families computed from the same scanned digits.

The images are scikit-learn's bundled handwritten digits (``sklearn.datasets.load_digits``:
1,797 scans of 8 x 8 pixels, 17 grey levels, from the UCI "Optical Recognition of Handwritten
Digits" set; shipped inside the package, nothing is downloaded). They are read from the file
``load_digits`` reads, ``sklearn/datasets/data/digits.csv.gz``, without importing scikit-learn
(which takes seconds). Each image gives one tuple;
each modality is a different family of features of that one image, in the spirit of UCI's
"Multiple Features" set (Fourier, Karhunen-Loève, pixel, Zernike, morphological views of one
scan), which scikit-learn does not ship:

- ``pixels`` (64): the grey levels, row by row.
- ``zones`` (16): mean grey level of each 2 x 2 block (the image at 4 x 4).
- ``profiles`` (16): the ink in each row and in each column.
- ``gradients`` (32): a histogram of gradient orientations (8 bins, weighted by the gradient's
  magnitude) in each quadrant of the image (HOG without block normalisation).
- ``dct`` (21): the 2-D discrete cosine transform's coefficients of lowest frequency
  (``u + v <= 5``), a low-pass description of the shape.
- ``moments`` (26): centre of mass, total ink, normalised central moments of order 2 and 3,
  and histograms of the ink by distance (8 bins) and by angle (8 bins) around the centre.

Every view is standardised with the training split's mean and standard deviation. The split
is a seeded shuffle of the 1,797 images into ``n_val`` and ``n_test`` rows, the rest training.
Each sample also has ``label`` (the digit) and ``id`` (its index in ``load_digits``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from polyalign.plugin import PolyalignError, Sample

ViewName = Literal["pixels", "zones", "profiles", "gradients", "dct", "moments"]
VIEWS: tuple[str, ...] = ("pixels", "zones", "profiles", "gradients", "dct", "moments")


class DigitViewsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    views: list[ViewName] = Field(list(VIEWS), min_length=2, description="feature families, one modality each")
    n_val: int = Field(150, ge=0, description="validation images")
    n_test: int = Field(300, ge=1, description="test images")
    seed: int | None = Field(None, description="split seed (default: the recipe's seed)")

    @field_validator("views")
    @classmethod
    def _distinct(cls, views: list[str]) -> list[str]:
        if len(set(views)) != len(views):
            raise ValueError(f"each view may appear once; got {views}")
        return views


def _pixels(img: np.ndarray) -> np.ndarray:
    return img.reshape(len(img), -1)


def _zones(img: np.ndarray) -> np.ndarray:
    return img.reshape(len(img), 4, 2, 4, 2).mean((2, 4)).reshape(len(img), -1)


def _profiles(img: np.ndarray) -> np.ndarray:
    return np.concatenate([img.sum(2), img.sum(1)], 1)


def _gradients(img: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(img, axis=(1, 2))
    magnitude = np.hypot(gx, gy)
    bins = ((np.arctan2(gy, gx) + np.pi) / (2 * np.pi) * 8).astype(int) % 8
    out = np.zeros((len(img), 2, 2, 8))
    for qy in range(2):
        for qx in range(2):
            cell = (slice(None), slice(4 * qy, 4 * qy + 4), slice(4 * qx, 4 * qx + 4))
            for b in range(8):
                out[:, qy, qx, b] = (magnitude[cell] * (bins[cell] == b)).sum((1, 2))
    return out.reshape(len(img), -1)


def _dct(img: np.ndarray) -> np.ndarray:
    from scipy.fft import dctn

    coef = dctn(img, axes=(1, 2), norm="ortho")
    u, v = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    return coef[:, u + v <= 5]


def _moments(img: np.ndarray) -> np.ndarray:
    ys, xs = np.meshgrid(np.arange(8.0), np.arange(8.0), indexing="ij")
    mass = img.sum((1, 2)) + 1e-9
    cy = (img * ys).sum((1, 2)) / mass
    cx = (img * xs).sum((1, 2)) / mass
    dy, dx = ys[None] - cy[:, None, None], xs[None] - cx[:, None, None]
    central = [(img * dy ** p * dx ** q).sum((1, 2)) / mass ** (1 + (p + q) / 2)
               for p, q in ((2, 0), (1, 1), (0, 2), (3, 0), (2, 1), (1, 2), (0, 3))]
    radius = np.hypot(dy, dx)
    by_radius = np.stack([(img * ((radius >= r) & (radius < r + 0.75))).sum((1, 2)) for r in np.arange(8) * 0.75], 1)
    angle = ((np.arctan2(dy, dx) + np.pi) / (2 * np.pi) * 8).astype(int) % 8
    by_angle = np.stack([(img * (angle == b)).sum((1, 2)) for b in range(8)], 1)
    return np.column_stack([cy, cx, mass, *central, by_radius / mass[:, None], by_angle / mass[:, None]])


FEATURES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "pixels": _pixels, "zones": _zones, "profiles": _profiles, "gradients": _gradients, "dct": _dct,
    "moments": _moments,
}


def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """``(images (1797, 8, 8), digits (1797,))`` from scikit-learn's bundled ``digits.csv.gz``."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz" if spec else None
    if path is None or not path.is_file():
        raise PolyalignError("dataset digit_views reads the digits scikit-learn ships "
                             f"({path or 'sklearn/datasets/data/digits.csv.gz'}), which is not installed: "
                             "pip install 'polyalign[probe]'")
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)


def digit_views(images: np.ndarray, views: list[str]) -> dict[str, np.ndarray]:
    """``view -> (n, width)`` features of ``(n, 8, 8)`` grey-level images."""
    images = np.asarray(images, dtype=np.float64)
    return {v: FEATURES[v](images) for v in views}


class DigitViewsDataset:
    """Six feature families (pixels, zones, profiles, gradients, DCT, moments) of scikit-learn's bundled 8x8 digits:
    one modality each, the same 1,797 scans

    One modality per feature family of scikit-learn's 8 x 8 digits; labels are the digits."""

    name = "digit_views"
    Options = DigitViewsConfig
    requires = {"sklearn": "polyalign[probe]"}

    root: Path | None = None

    def __init__(self, config: DigitViewsConfig, seed: int = 0):
        images, digits = load_digit_images()
        if config.n_val + config.n_test >= len(images):
            raise PolyalignError(f"digit_views has {len(images)} images; n_val + n_test = "
                                 f"{config.n_val + config.n_test} leaves none to train on")
        self.modalities = tuple(config.views)
        order = np.random.default_rng(config.seed if config.seed is not None else seed).permutation(len(images))
        parts = {"test": order[:config.n_test], "val": order[config.n_test:config.n_test + config.n_val],
                 "train": order[config.n_test + config.n_val:]}
        features = digit_views(images, config.views)
        train = parts["train"]
        for v, x in features.items():
            std = x[train].std(0)
            features[v] = ((x - x[train].mean(0)) / np.where(std > 0, std, 1.0)).astype(np.float32)
        self._splits = {name: [{**{v: features[v][i] for v in config.views}, "label": int(digits[i]),
                                "id": str(int(i))} for i in rows] for name, rows in parts.items()}

    def split(self, name: str) -> list[Sample]:
        return self._splits[name]
