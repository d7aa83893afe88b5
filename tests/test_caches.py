"""The decode-once input cache (memory, disk) and the feature cache for frozen towers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from crash_plugin import StopAtStep
from PIL import Image
from safetensors.torch import load_file

import polyalign
from polyalign.cli import main
from polyalign.core.encoder import Encoder
from polyalign.core.errors import PolyalignError
from polyalign.core.plugin_manager import make_plugins
from polyalign.files.weights import WEIGHTS
from polyalign.plugins.encoders.image import ImageEncoder
from polyalign.training.cache_fill import fill_caches
from polyalign.training.distributed import DistInfo
from polyalign.training.input_cache import value_key
from polyalign.training.loop import Trainer

XOR = ROOT / "polyalign" / "recipes" / "xor-clip.yaml"


def _image(path: Path, seed: int, size: int = 8) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def data(tmp_path) -> Path:
    """12 train, 4 val and 4 test tuples: a PNG image and a 3-number vector each."""
    folder = tmp_path / "data"
    (folder / "img").mkdir(parents=True)
    splits = {"train": range(12), "val": range(12, 16), "test": range(16, 20)}
    for split, rows in splits.items():
        lines = []
        for i in rows:
            _image(folder / "img" / f"{i}.png", i)
            lines.append(json.dumps({"id": f"r{i}", "image": f"img/{i}.png", "v": [float(i % 3), 1.0, -1.0]}))
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def _recipe(data: Path, *extra: str) -> list[str]:
    return [f"data={{plugin: manifest, path: '{data}'}}",
            "modalities={image: {encoder: {plugin: image, model: test_resnet, image_size: 16}}, "
            "v: {encoder: {plugin: vector, hidden: [8]}}}",
            "loss={plugin: clip}", "eval=[]", "train.batch_size=4", "train.epochs=2", "train.warmup_steps=0",
            "train.num_workers=0", "logging=[]", *extra]


@pytest.fixture
def decodes(monkeypatch) -> list[str]:
    """The values the image encoder decodes in this process."""
    calls: list[str] = []
    original = ImageEncoder.decode

    def counting(self, value, root):
        calls.append(str(value))
        return original(self, value, root)

    monkeypatch.setattr(ImageEncoder, "decode", counting)
    return calls


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "last" / WEIGHTS))


def _assert_weights_equal(a: Path, b: Path, atol: float = 0.0) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], rtol=0, atol=atol), k


# --------------------------------------------------------------------------- input cache on disk
def test_disk_cache_is_reused_and_invalidated_by_a_file_or_an_option(data, tmp_path, decodes):
    base = _recipe(data, "cache.inputs=disk", f"cache.dir={tmp_path / 'cache'}")
    filled = {f.modality: f for f in fill_caches(polyalign.load_recipe(XOR, base), show_progress=False)}
    assert filled["image"].computed == filled["image"].entries == 16
    assert sorted(set(decodes)) == sorted(f"img/{i}.png" for i in range(16))
    assert {f.computed for f in fill_caches(polyalign.load_recipe(XOR, base), show_progress=False)} == {0}

    _image(data / "img" / "5.png", 99, size=10)  # the file changes (content, size, time)
    again = {f.modality: f for f in fill_caches(polyalign.load_recipe(XOR, base), show_progress=False)}
    assert again["image"].computed == 1 and again["v"].computed == 0 and decodes[-1] == "img/5.png"
    stored = {k: v for f in again["image"].folder.glob("*.safetensors") for k, v in load_file(str(f)).items()}
    encoder = polyalign.build("encoder", "image", model="test_resnet", image_size=16)
    assert torch.equal(stored[value_key(Path("img/5.png"), data)], encoder.decode(Path("img/5.png"), data))  # new file

    bigger = fill_caches(polyalign.load_recipe(XOR, base + ["modalities.image.encoder.image_size=12"]),
                         show_progress=False)
    assert {f.modality: f.computed for f in bigger} == {"image": 16, "v": 0}  # a load option: new entries
    frozen = fill_caches(polyalign.load_recipe(XOR, base + ["modalities.image.encoder.freeze=true"]),
                         show_progress=False)
    assert {f.modality: f.computed for f in frozen} == {"image": 0, "v": 0}  # not a load option: reused


def test_a_disk_input_cache_entry_laid_out_unlike_the_encoders_values_is_refused(data, tmp_path, capsys):
    from safetensors.torch import save_file

    base = _recipe(data, "cache.inputs=disk", f"cache.dir={tmp_path / 'cache'}")
    filled = {f.modality: f for f in fill_caches(polyalign.load_recipe(XOR, base), show_progress=False)}
    files = sorted(filled["image"].folder.glob("*.safetensors"))
    for f in files:  # the same keys, each a 2-D uint8 tensor where the encoder decodes 3-D float32 images
        save_file({k: (v[0] * 255).to(torch.uint8) for k, v in load_file(str(f)).items()}, str(f))
    assert main(["cache", str(XOR), *base]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"the input cache of modality 'image' holds a 2-D torch.uint8 tensor for a value in {files[0].parent}/" in err
    assert "where the 'image' encoder decodes values to a 3-D torch.float32 tensor" in err
    assert f"Delete the folder {filled['image'].folder}" in err
    assert main(["train", str(XOR), *base, "--out", str(tmp_path / "runs")]) == 2  # training reads it too
    assert "holds a 2-D torch.uint8 tensor" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.slow
def test_training_through_the_disk_cache_equals_training_without(data, tmp_path, decodes):
    plain = polyalign.train(XOR, out=tmp_path / "plain", overrides=_recipe(data))
    cached = _recipe(data, "cache.inputs=disk", f"cache.dir={tmp_path / 'cache'}")
    first = polyalign.train(XOR, out=tmp_path / "first", overrides=cached)
    n = len(decodes)
    second = polyalign.train(XOR, out=tmp_path / "second", overrides=cached)
    assert set(decodes[n:]) == {decodes[n]}  # only the start-up checks' example: the rest came from the cache
    _assert_weights_equal(plain, first)
    _assert_weights_equal(plain, second)


@pytest.mark.slow
def test_disk_cache_works_on_shards(data, tmp_path):
    pytest.importorskip("webdataset")
    from polyalign.plugins.datasets.shards import write_shards

    write_shards(data, tmp_path / "shards", 5)
    shards = [f"data={{plugin: webdataset, path: '{tmp_path / 'shards'}', modalities: {{image: image.png, "
              f"v: v.json}}, shuffle_buffer: 4}}"]
    recipe = _recipe(data, *shards, "cache.inputs=disk", f"cache.dir={tmp_path / 'cache'}", "train.num_workers=1")
    plain = polyalign.train(XOR, out=tmp_path / "plain", overrides=_recipe(data, *shards, "train.num_workers=1"))
    cached = polyalign.train(XOR, out=tmp_path / "cached", overrides=recipe)
    _assert_weights_equal(plain, cached)
    assert len(list((tmp_path / "cache" / "inputs").glob("ImageEncoder-*/*.safetensors")))
    with pytest.raises(PolyalignError, match="cache.inputs: memory keeps a whole split in memory"):
        polyalign.train(XOR, out=tmp_path / "mem", overrides=recipe + ["cache.inputs=memory"])


# --------------------------------------------------------------------------- input cache in memory
@pytest.mark.slow
def test_memory_cache_with_a_worker_trains_like_no_cache(data, tmp_path):
    plain = polyalign.train(XOR, out=tmp_path / "plain", overrides=_recipe(data, "train.num_workers=1"))
    recipe = polyalign.load_recipe(XOR, _recipe(data, "cache.inputs=memory", "train.num_workers=1",
                                                "train.epochs=3"))
    run = tmp_path / "mem"
    run.mkdir()
    trainer = Trainer(recipe, run, make_plugins(), DistInfo())
    trainer.fit()
    # every train and val value came back from the worker that decoded it
    assert {m: len(s) for m, s in trainer.data.inputs.items()} == {"image": 16, "v": 3}
    again = polyalign.train(XOR, out=tmp_path / "mem2", overrides=_recipe(data, "cache.inputs=memory",
                                                                           "train.num_workers=1"))
    _assert_weights_equal(plain, again)


def test_memory_cache_keeps_the_decoded_image_and_augments_at_each_use(data, tmp_path):
    recipe = polyalign.load_recipe(XOR, _recipe(data, "cache.inputs=memory", "modalities.image.encoder.augment=true"))
    run = tmp_path / "aug"
    run.mkdir()
    trainer = Trainer(recipe, run, make_plugins(), DistInfo())
    trainer.fit()
    stored = trainer.data.inputs["image"].values
    assert len(stored) == 16 and all(x.dtype == torch.uint8 and x.shape == (3, 8, 8) for x in stored.values())
    encoder = trainer.model.encoders["image"].train()
    x = next(iter(stored.values()))
    torch.manual_seed(0)
    crops = [encoder.finish(x, train=True) for _ in range(4)]
    assert crops[0].shape == (3, 16, 16) and any(not torch.equal(crops[0], c) for c in crops[1:])


# --------------------------------------------------------------------------- random loads are refused
class Noisy(Encoder):
    """A vector encoder whose decode adds noise (an augmentation inside decode)."""

    def __init__(self, declared: bool):
        super().__init__()
        self.random_decode = declared
        self.width = 3
        self.net = torch.nn.Linear(3, 3)

    def decode(self, value, root):
        return torch.as_tensor(value, dtype=torch.float32) + 0.01 * torch.randn(3)

    def forward(self, x):
        return self.net(x)


class NoisyUndeclared(Noisy):
    """random decode, not declared"""

    name = "noisy"

    def __init__(self):
        super().__init__(False)


class NoisyDeclared(Noisy):
    """random decode, declared"""

    name = "noisy_declared"

    def __init__(self):
        super().__init__(True)


class NoisyPlugin:
    @polyalign.hookimpl
    def register_encoders(self, register):
        register(NoisyUndeclared)
        register(NoisyDeclared)


@pytest.mark.parametrize("plugin, message", [
    ("noisy", "decoded the same value ([0.0, 1.0, -1.0]) to different tensors under different random seeds"),
    ("noisy_declared", "decodes values at random (random_decode = True)")])
def test_input_cache_refuses_random_decodes(data, tmp_path, plugin, message):
    overrides = _recipe(data, "cache.inputs=memory", f"modalities.v.encoder={{plugin: {plugin}}}")
    plugins = make_plugins(extra=[NoisyPlugin()])
    with pytest.raises(PolyalignError, match=r"cache.inputs: the '%s' encoder of modality 'v'" % plugin) as err:
        polyalign.train(polyalign.load_recipe(XOR, overrides, plugins), out=tmp_path / "r", plugins=plugins)
    assert message in str(err.value) and "put the random part in finish()" in str(err.value)


# --------------------------------------------------------------------------- feature cache
@pytest.mark.slow
def test_feature_cache_trains_and_embeds_like_the_uncached_model(data, tmp_path, capsys):
    frozen = _recipe(data, "modalities.image.encoder.freeze=true", f"cache.dir={tmp_path / 'cache'}",
                     "train.epochs=3", "eval=[{plugin: zero_shot, target: image}]")
    assert main(["cache", str(XOR), *frozen, "cache.features=true"]) == 0
    out = capsys.readouterr().out
    assert "features" in out and "image" in out and "16" in out
    folder = next((tmp_path / "cache" / "features").iterdir())
    assert sum(len(load_file(str(f))) for f in folder.glob("*.safetensors")) == 16

    cached = polyalign.train(XOR, out=tmp_path / "cached", overrides=frozen + ["cache.features=true"])
    plain = polyalign.train(XOR, out=tmp_path / "plain", overrides=frozen)
    _assert_weights_equal(plain, cached, atol=1e-5)
    images = [data / "img" / f"{i}.png" for i in range(16)]
    a, b = polyalign.load(cached), polyalign.load(plain)
    za, zb = a.embed({"image": images})["image"], b.embed({"image": images})["image"]
    assert torch.allclose(za, zb, rtol=0, atol=1e-5)
    query = {"v": [[0.0, 1.0, -1.0]]}
    assert [h.index for h in a.search(query, {"image": images}, top_k=5)[0]] == \
        [h.index for h in b.search(query, {"image": images}, top_k=5)[0]]
    # the heads saw exactly the towers' output: cached feature -> head equals the raw path
    features = {k: v for f in folder.glob("*.safetensors") for k, v in load_file(str(f)).items()}
    model = a.model
    with torch.no_grad():
        from_cache = model.heads["image"](torch.stack([features[value_key(p, None)] for p in images]))
        from_raw = model.heads["image"](model.encoders["image"](torch.stack([model.encoders["image"].load(p, None)
                                                                             for p in images])))
    assert torch.allclose(from_cache, from_raw, rtol=0, atol=1e-5)
    assert json.loads((cached / "eval" / "report.json").read_text()) == \
        json.loads((plain / "eval" / "report.json").read_text())


def test_feature_cache_needs_a_frozen_encoder(data, tmp_path):
    with pytest.raises(PolyalignError, match="no encoder of this recipe is frozen"):
        fill_caches(polyalign.load_recipe(XOR, _recipe(data, "cache.features=true", f"cache.dir={tmp_path}")),
                    show_progress=False)
    with pytest.raises(PolyalignError, match="no disk cache to fill"):
        fill_caches(polyalign.load_recipe(XOR, _recipe(data)), show_progress=False)


# --------------------------------------------------------------------------- random transforms stay reproducible
@pytest.mark.slow
def test_augmentation_does_not_depend_on_workers_cache_or_resume(data, tmp_path):
    """Each batch draws its random crops from a seed of (run seed, epoch, batch), whichever
    process loads it, from a cache or not, before or after a resume."""
    aug = _recipe(data, "modalities.image.encoder.augment=true")
    reference = polyalign.train(XOR, out=tmp_path / "w0", overrides=aug)
    for name, extra in (("w1", ["train.num_workers=1"]),
                        ("memory", ["train.num_workers=1", "cache.inputs=memory"]),
                        ("disk", ["cache.inputs=disk", f"cache.dir={tmp_path / 'cache'}"])):
        _assert_weights_equal(reference, polyalign.train(XOR, out=tmp_path / name, overrides=aug + extra))
    with pytest.raises(KeyboardInterrupt):  # stopped mid-epoch 2 (3 batches per epoch), then resumed
        polyalign.train(XOR, out=tmp_path / "cut", plugins=make_plugins(extra=[StopAtStep(4)]),
                        overrides=aug + ["train.num_workers=1", "train.checkpoint_every=1", "train.log_every=1"])
    (cut,) = (tmp_path / "cut").iterdir()
    _assert_weights_equal(reference, polyalign.train(None, resume=cut))
