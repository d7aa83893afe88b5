"""Encoder ``open_clip``: a tower of an open_clip model from local files, equal to open_clip's own encoders."""

from __future__ import annotations

import json
import runpy
import socket
import subprocess
import sys
import textwrap

import numpy as np
import open_clip
import pytest
import torch
import yaml
from conftest import RECIPES, ROOT
from PIL import Image
from pydantic import ValidationError
from safetensors.torch import load_file

import polyalign
from polyalign.cli import main
from polyalign.core.errors import PolyalignError
from polyalign.plugins.encoders.open_clip import WEIGHTS_FILE, save_random_model
from polyalign.testing import check_encoder

TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 24, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16},
             "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
TEXTS = ["a red circle", "note.txt", "Ünïcödé and a very long caption " * 6]


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    """An open_clip model folder (config + random weights), as open_clip saves one."""
    folder = tmp_path_factory.mktemp("tiny-clip")
    save_random_model(folder, TINY_CLIP, seed=1)
    return folder


def _images(folder):
    rng = np.random.default_rng(0)
    Image.fromarray(np.full((20, 30, 3), (255, 0, 0), np.uint8)).save(folder / "red.png")
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / "noise.png")
    Image.fromarray(rng.integers(0, 255, (30, 50), dtype=np.uint8)).save(folder / "grey.png")  # converted to RGB
    return ["red.png", "noise.png", "grey.png"]


def _tower(folder, tower, **options):
    options = {"pretrained": str(folder / WEIGHTS_FILE), **options}
    return polyalign.build("encoder", "open_clip", model=str(folder), tower=tower, **options).eval()


def test_image_tower_equals_open_clips_encode_image(clip_folder, tmp_path):
    names = _images(tmp_path)
    encoder = _tower(clip_folder, "image")
    reference, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{clip_folder}")
    with torch.no_grad():
        ours = encoder(encoder.collate([encoder.load(n, tmp_path) for n in names]))
        theirs = reference.eval().encode_image(torch.stack([preprocess(Image.open(tmp_path / n)) for n in names]))
        random = _tower(clip_folder, "image", pretrained=False)(encoder.load(names[0], tmp_path)[None])
    assert encoder.width == 16 and ours.shape == (3, 16)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    assert not torch.allclose(random, ours[:1], atol=1e-3)  # the weights came from the file


def test_text_tower_equals_open_clips_encode_text_offline(clip_folder, tmp_path, monkeypatch):
    (tmp_path / "note.txt").write_text("a blue square, lower left", encoding="utf-8")

    def no_network(*args, **kwargs):
        raise AssertionError("the open_clip encoder tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    encoder = _tower(clip_folder, "text")
    tokens = [encoder.load(t, tmp_path) for t in TEXTS]
    assert all(t.shape == (20,) and t.dtype == torch.long for t in tokens)  # context_length, long texts cut
    reference = open_clip.create_model(f"local-dir:{clip_folder}").eval()  # the plain CLIP class
    tokenizer = open_clip.get_tokenizer(f"local-dir:{clip_folder}")
    with torch.no_grad():
        ours = encoder(encoder.collate(tokens))
        theirs = reference.encode_text(tokenizer(["a red circle", "a blue square, lower left", TEXTS[2]]))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_a_named_architecture_from_a_pt_file(clip_folder, tmp_path):
    (tmp_path / "polyalign-test-tiny.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(tmp_path / "polyalign-test-tiny.json")  # as ViT-B-32 is: a name open_clip knows
    torch.manual_seed(2)
    weights = open_clip.create_model("polyalign-test-tiny").state_dict()  # plain CLIP keys (no "text.")
    torch.save(weights, tmp_path / "clip.pt")
    encoder = polyalign.build("encoder", "open_clip", model="polyalign-test-tiny", tower="text",
                              pretrained=str(tmp_path / "clip.pt")).eval()
    reference = open_clip.create_model("polyalign-test-tiny", pretrained=str(tmp_path / "clip.pt")).eval()
    tokens = open_clip.get_tokenizer("polyalign-test-tiny")(["a cat"])
    with torch.no_grad():
        torch.testing.assert_close(encoder(encoder.load("a cat", None)[None]), reference.encode_text(tokens),
                                   rtol=0, atol=1e-6)


def test_both_towers_and_their_adapters_keep_the_encoder_contract(clip_folder, tmp_path):
    names = _images(tmp_path)
    (tmp_path / "note.txt").write_text("a blue square", encoding="utf-8")
    for lora in (None, {"r": 2}):
        options = {"model": str(clip_folder), "pretrained": str(clip_folder / WEIGHTS_FILE), "lora": lora}
        check_encoder("open_clip", names, root=tmp_path, tower="image", **options)
        check_encoder("open_clip", TEXTS, root=tmp_path, tower="text", **options)


def test_freeze_keeps_the_tower_fixed(clip_folder):
    encoder = _tower(clip_folder, "text", freeze=True).train()
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.tower.training


@pytest.mark.parametrize("options, match", [
    ({"model": "ViT-B-33"}, "neither a folder nor an open_clip architecture; did you mean ViT-B-32"),
    ({"model": "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"}, "hf-hub: would download"),
    ({"model": "ViT-B-16-SigLIP"}, "Hugging Face tokenizer, which would be downloaded"),
    ({"model": "roberta-ViT-B-32", "tower": "image"}, "Hugging Face model 'roberta-base'"),
    ({"pretrained": "laion2b_s34b_b79k"}, "weights file not found: laion2b_s34b_b79k"),
    ({"pretrained": "https://example.org/clip.pt"}, "looks like a URL; polyalign never downloads"),
])
def test_what_would_download_is_refused(options, match):
    options = {"model": "ViT-B-32", "tower": "text", **options}
    with pytest.raises(PolyalignError, match=match):
        polyalign.build("encoder", "open_clip", **options)


def _two_tower_recipe(clip_folder, *overrides):
    towers = ", ".join(f"{t}: {{encoder: {{plugin: open_clip, model: '{clip_folder}', tower: {t}}}}}"
                       for t in ("image", "text"))
    return polyalign.load_recipe(RECIPES / "xor-clip.yaml",
                                 [f"modalities={{{towers}}}", "eval=[]", "model.embed_dim=16", *overrides])


def test_head_none_has_exactly_open_clips_parameters(clip_folder):
    from polyalign.core.assemble import build_loss, build_model
    from polyalign.core.plugin_manager import default_plugins

    def count(*modules):
        return sum(p.numel() for m in modules for p in m.parameters())

    plugins = default_plugins()
    reference = open_clip.create_model(f"local-dir:{clip_folder}")  # both towers and logit_scale
    recipe = _two_tower_recipe(clip_folder, "model.head=none")
    model, loss = build_model(recipe, plugins), build_loss(recipe, plugins)
    assert count(model, loss) == count(reference)
    linear = build_model(_two_tower_recipe(clip_folder), plugins)
    assert count(linear) - count(model) == 2 * (16 * 16 + 16)  # the two linear heads it leaves out
    mixed = build_model(_two_tower_recipe(clip_folder, "model.head={image: mlp}"), plugins)
    assert count(mixed) - count(linear) == 16 * 16 + 16  # image: 16 -> 16 -> 16; text keeps its linear head
    with pytest.raises(PolyalignError, match=r"model.head of modality 'image'.*width to be model.embed_dim.*"
                                             r"is 16 and embed_dim is 8"):
        build_model(_two_tower_recipe(clip_folder, "model.head=none", "model.embed_dim=8"), plugins)
    with pytest.raises(polyalign.core.errors.RecipeError, match="model.head.audio"):
        _two_tower_recipe(clip_folder, "model.head={audio: none}")


def test_config_and_file_errors(clip_folder, tmp_path):
    with pytest.raises(ValidationError, match="would download weights"):
        polyalign.build("encoder", "open_clip", model=str(clip_folder), tower="image", pretrained=True)
    with pytest.raises(ValidationError, match="set one of them"):
        polyalign.build("encoder", "open_clip", model=str(clip_folder), tower="image", freeze=True, lora={"r": 2})
    with pytest.raises(PolyalignError, match="is not an open_clip model folder: cannot read its open_clip_config"):
        polyalign.build("encoder", "open_clip", model=str(tmp_path), tower="image")
    other = dict(TINY_CLIP, embed_dim=8)
    save_random_model(tmp_path / "other", other)
    with pytest.raises(PolyalignError, match=r"other/open_clip_model.safetensors does not fit local-dir:.*"
                                             r"size mismatch"):
        polyalign.build("encoder", "open_clip", model=str(clip_folder), tower="image",
                        pretrained=str(tmp_path / "other" / WEIGHTS_FILE))


def test_polyalign_plugins_lists_open_clip(capsys):
    assert main(["plugins", "--json"]) == 0
    encoders = {c["name"]: c for c in json.loads(capsys.readouterr().out)["encoders"]}
    assert "open_clip" in encoders and "open_clip" in encoders["open_clip"]["help"]


def test_shipped_lora_recipe_trains_and_its_export_loads_without_peft(tmp_path, monkeypatch):
    """recipes/demo-open-clip-lora.yaml as shipped (the script writes its tower), on a tiny demo: the
    adapters train, and the export (adapters merged) embeds as the run does, with peft unavailable."""
    monkeypatch.setattr(sys, "argv", ["make_open_clip_folder.py", str(tmp_path / "clip")])
    runpy.run_path(str(ROOT / "scripts" / "make_open_clip_folder.py"), run_name="__main__")
    clip = {f"modalities.{m}.encoder.{k}={tmp_path / 'clip' / v}" for m in ("image", "text")
            for k, v in (("model", ""), ("pretrained", WEIGHTS_FILE))}
    run = polyalign.train(RECIPES / "demo-open-clip-lora.yaml", out=tmp_path / "runs", overrides=[
        *sorted(clip), f"data.path={tmp_path / 'data'}", "data.n_train=32", "data.n_val=8", "data.n_test=8",
        "data.classes=2", "modalities.audio.encoder.channels=[4,8]", "train.epochs=1", "train.batch_size=16",
        "train.warmup_steps=0", "train.log_every=1", "eval=[]"])
    weights = load_file(run / "checkpoints" / "last" / "model.safetensors")
    adapters = [k for k in weights if ".lora_B." in k]
    assert adapters and all(weights[k].abs().max() > 0 for k in adapters)  # trained away from their zero init
    assert main(["export", str(run), str(tmp_path / "exported")]) == 0
    exported = yaml.safe_load((tmp_path / "exported" / "recipe.yaml").read_text())["modalities"]
    assert exported["image"]["encoder"]["lora"] is None and exported["text"]["encoder"]["pretrained"] is False
    assert not any(".lora_" in k for k in load_file(tmp_path / "exported" / "model.safetensors"))
    card = (tmp_path / "exported" / "MODEL_CARD.md").read_text()
    assert "merged:\n- image\n- text\n" in card and "(LoRA adapters) of image, text is merged" in card
    rows = [json.loads(line) for line in (tmp_path / "data" / "test.jsonl").read_text().splitlines()]
    values = {m: [r[m] for r in rows] for m in ("image", "text", "audio")}
    script = textwrap.dedent(f"""
        import sys
        sys.modules["peft"] = None  # any import of peft fails
        import torch, polyalign
        model = polyalign.load({str(tmp_path / 'exported')!r})
        torch.save(model.embed({values!r}, root={str(tmp_path / 'data')!r}), {str(tmp_path / 'z.pt')!r})
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=120)
    fresh = torch.load(tmp_path / "z.pt", weights_only=True)
    here = polyalign.load(run).embed(values, root=tmp_path / "data")
    for m in values:  # merged weights round differently from base + adapter, and threads differ: not bitwise
        torch.testing.assert_close(fresh[m], here[m], rtol=1e-4, atol=1e-5)
