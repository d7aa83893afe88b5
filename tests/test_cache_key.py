"""The cache folders' keys cover everything a cached value depends on (issue 22, class 1): each option of
each built-in encoder is changed in turn, and whenever the decoded input (input cache) or the computed
feature (feature cache) changes, so does the folder's key."""

from __future__ import annotations

import shutil
import wave
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import polyalign
from polyalign.core.plugin_manager import default_plugins
from polyalign.core.recipe import PluginNode
from polyalign.training.cache_key import options_key

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "circle", "blue", "square"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Any]:
    """One value per encoder, and the local models and weights files the options name."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from polyalign.plugins.encoders.open_clip import save_random_model

    root = tmp_path_factory.mktemp("values")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 28, 3), dtype=np.uint8)).save(root / "a.png")
    with wave.open(str(root / "a.wav"), "wb") as fh:
        fh.setnchannels(1), fh.setsampwidth(2), fh.setframerate(8000)
        fh.writeframes((rng.standard_normal(3000) * 3000).astype("<i2").tobytes())
    np.save(root / "ecg.npy", rng.standard_normal((2, 80)).astype(np.float32))
    bert = root / "bert"
    BertTokenizerFast(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(bert)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).save_pretrained(bert)
    shutil.copytree(bert, root / "bert-copy")
    clip_cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 24, "patch_size": 8, "width": 32, "layers": 1,
                                                "head_width": 16},
                "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    clip_weights = save_random_model(root / "clip", clip_cfg)
    save_random_model(root / "clip-wider", {**clip_cfg, "embed_dim": 8})
    torch.manual_seed(1)
    image_weights = root / "resnet.safetensors"
    save_file(polyalign.build("encoder", "image", model="test_resnet").backbone.state_dict(), str(image_weights))
    audio_weights = root / "audio.safetensors"
    audio = polyalign.build("encoder", "audio", **AUDIO)
    save_file({k: v + 0.1 for k, v in audio.backbone.state_dict().items()}, str(audio_weights))
    return {"root": root, "bert": str(bert), "bert-copy": str(root / "bert-copy"), "clip": str(root / "clip"),
            "clip-wider": str(root / "clip-wider"), "clip-weights": str(clip_weights),
            "image-weights": str(image_weights), "audio-weights": str(audio_weights)}


AUDIO = {"sample_rate": 8000, "clip_seconds": 0.25, "n_mels": 16, "n_fft": 128, "channels": [4, 8]}
# encoder: (value, base options, {option: another value}); "<name>" is the file of that name in `files`
ENCODERS: dict[str, tuple[Any, dict[str, Any], dict[str, Any]]] = {
    "image": ("a.png", {"model": "test_resnet", "image_size": 64}, {
        "model": "test_efficientnet", "pretrained": "<image-weights>", "image_size": 48, "channels": 1,
        "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.3, 0.4], "augment": True, "freeze": True,
        "grad_checkpointing": True, "timm_kwargs": {"global_pool": "max"},
        "lora": {"r": 2, "target_modules": ["layer1.0.conv1"]}}),
    "audio": ("a.wav", AUDIO, {
        "sample_rate": 4000, "clip_seconds": 0.5, "crop": "start", "backbone": "wav2vec2", "n_mels": 32,
        "n_fft": 256, "hop_length": 50, "channels": [4], "arch": "tiny", "weights": "<audio-weights>",
        "freeze": True, "grad_checkpointing": True}),
    "ecg": ("ecg.npy", {"leads": 2, "length": 64, "base_width": 4, "blocks": [1]}, {
        "leads": 3, "length": 48, "layout": "time_first", "crop": "start", "sample_rate": 250,
        "lead_names": ["I", "II"], "base_width": 8, "blocks": [1, 1], "kernel_size": 5,
        "grad_checkpointing": True}),
    "tabular": ({"a": 1.0, "b": 4.0}, {"hidden": [8]}, {
        "columns": ["b", "a"], "dim": 3, "mean": [1.0, 1.0], "std": [2.0, 2.0], "fill": 1.0,
        "indicators": False, "hidden": [4], "dropout": 0.1}),
    "byte_text": ("a red circle", {"dim": 16, "layers": 1, "heads": 2, "max_length": 16}, {
        "dim": 32, "layers": 2, "heads": 4, "ff_dim": 8, "max_length": 8, "dropout": 0.1, "pooling": "cls",
        "grad_checkpointing": True}),
    "text": ("a red circle a blue square", {"model": "<bert>", "max_length": 8}, {
        "model": "<bert-copy>", "pooling": "cls", "max_length": 4, "freeze": True, "grad_checkpointing": True,
        "lora": {"r": 2}}),
    "open_clip": ("a.png", {"model": "<clip>", "tower": "image"}, {
        "model": "<clip-wider>", "tower": "text", "pretrained": "<clip-weights>", "augment": True, "freeze": True,
        "grad_checkpointing": True, "lora": {"r": 2}}),
    "vector": ([1.0, 2.0, 3.0], {}, {"dim": 4, "hidden": [5], "dropout": 0.1}),
}
CASES = [(name, option) for name, (_, _, changes) in ENCODERS.items() for option in changes]


def _resolve(value: Any, files: dict[str, Any]) -> Any:
    if isinstance(value, str) and value.startswith("<") and value.endswith(">"):
        return files[value[1:-1]]
    return value


BASE: dict[str, tuple[dict[str, str], Any, Any]] = {}  # each encoder's _outputs at its base options


def _outputs(name: str, options: dict[str, Any], files: dict[str, Any]) -> tuple[dict[str, str], Any, Any]:
    """The encoder's cache keys, its decoded value and its feature (None where the value does not load)."""
    value = ENCODERS[name][0]
    torch.manual_seed(0)
    encoder = polyalign.build("encoder", name, example=value, root=files["root"], **options)
    node = PluginNode(plugin=name, **options)
    keys = {kind: options_key(node, encoder, kind) for kind in ("inputs", "features")}
    encoder.eval()
    try:
        decoded = encoder.decode(value, files["root"])
        with torch.no_grad():
            feature = encoder(encoder.collate([encoder.load(value, files["root"])]))
    except Exception:  # noqa: BLE001 - the value does not fit these options: nothing cached to go stale
        return keys, None, None
    return keys, decoded, feature


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)


def test_the_table_changes_every_option_of_every_built_in_encoder():
    registry = default_plugins().registry
    built_in = {c.name: c for c in registry.components("encoder") if c.plugin == "polyalign:encoders"}
    assert set(ENCODERS) == set(built_in)
    for name, (_, _, changes) in ENCODERS.items():
        assert set(changes) == set(built_in[name].config.model_fields), name


@pytest.mark.parametrize("name,option", CASES, ids=[f"{n}.{o}" for n, o in CASES])
def test_a_changed_option_changes_the_key_of_what_it_changes(name, option, files):
    _, base, changes = ENCODERS[name]
    base = {k: _resolve(v, files) for k, v in base.items()}
    changed = {**base, option: _resolve(changes[option], files)}
    if option == "backbone":
        changed["arch"] = "tiny"  # the default wav2vec2 is 95M parameters
    if name not in BASE:
        BASE[name] = _outputs(name, base, files)
    before, after = BASE[name], _outputs(name, changed, files)
    assert before[1] is not None, f"{name} {base} does not load its value"
    if not _same(before[1], after[1]):
        assert before[0]["inputs"] != after[0]["inputs"], f"{name}.{option} changes the decoded input, not its key"
    if not _same(before[2], after[2]):
        assert before[0]["features"] != after[0]["features"], f"{name}.{option} changes the feature, not its key"
    assert before[0]["features"] != after[0]["features"]  # every option is in the feature key


def test_the_key_changes_with_the_library_versions(monkeypatch):
    from polyalign.training import cache_key

    encoder = polyalign.build("encoder", "vector", dim=3)
    node = PluginNode(plugin="vector")
    before = {kind: options_key(node, encoder, kind) for kind in ("inputs", "features")}
    real = cache_key._version
    monkeypatch.setattr(cache_key, "_version", lambda name: "0.0" if name == "numpy" else real(name))
    assert all(options_key(node, encoder, kind) != before[kind] for kind in before)


def test_a_model_folder_rewritten_in_place_changes_the_key(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path / "bert"
    BertTokenizerFast(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(folder)
    BertModel(BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).save_pretrained(folder)
    node = PluginNode(plugin="text", model=str(folder))

    def keys_and_tokens() -> tuple[str, list[int]]:
        encoder = polyalign.build("encoder", "text", model=str(folder))
        return options_key(node, encoder, "inputs"), encoder.decode("a red circle", None)["input_ids"].tolist()

    before = keys_and_tokens()
    BertTokenizerFast(vocab={w: i for i, w in enumerate(reversed(WORDS))}).save_pretrained(folder)  # same path
    after = keys_and_tokens()
    assert before[1] != after[1] and before[0] != after[0]
