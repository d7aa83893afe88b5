"""Layer groups: what ``unlocked_layers`` locks and the learning rate ``lr_scale`` and ``layer_decay`` give."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import load_file
from timm.optim import param_groups_layer_decay

import polyalign
from polyalign.core.assemble import assemble, build_model
from polyalign.core.encoder import Encoder
from polyalign.core.errors import PluginError, PolyalignError
from polyalign.core.layer_groups import checked_layer_groups, lock_layers
from polyalign.core.plugin_manager import default_plugins
from polyalign.core.recipe import validate_recipe
from polyalign.plugins.datasets.demo import write_demo
from polyalign.plugins.encoders.open_clip import save_random_model
from polyalign.testing import ConformanceError, check_encoder
from polyalign.training.optim import build_optimizer

TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16},
             "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-clip")
    save_random_model(folder, TINY_CLIP)
    return folder


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    """A 2-layer BERT and its tokenizer in a local folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"]
    BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}).save_pretrained(folder)
    BertModel(BertConfig(vocab_size=5, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=16, max_position_embeddings=16)).save_pretrained(folder)
    return folder


W2V = "backbone.model.encoder.transformer."
# plugin, options, the name prefixes of each layer group in order (every name in a group starts with one
# of its prefixes, and every prefix is used)
GROUPS = {
    "image-vit": ("image", {"model": "test_vit", "image_size": 32}, [
        ("backbone.cls_token", "backbone.pos_embed", "backbone.patch_embed.")]
        + [(f"backbone.blocks.{i}.",) for i in range(5)] + [("backbone.blocks.5.", "backbone.norm.")]),
    "image-resnet": ("image", {"model": "test_resnet", "image_size": 32}, [
        ("backbone.conv1.", "backbone.bn1.")] + [(f"backbone.layer{i}.",) for i in range(1, 5)]),
    "text": ("text", {}, [("transformer.embeddings.",), ("transformer.encoder.layer.0.",),
                          ("transformer.encoder.layer.1.", "transformer.pooler.")]),
    "byte_text": ("byte_text", {"dim": 16, "layers": 3, "heads": 2}, [
        ("tokens.", "positions."), ("transformer.layers.0.",), ("transformer.layers.1.",),
        ("transformer.layers.2.", "norm.")]),
    "audio-cnn": ("audio", {"channels": [4, 8]}, [("backbone.blocks.0.", "backbone.blocks.1."),
                                                  ("backbone.blocks.4.", "backbone.blocks.5.")]),
    "audio-wav2vec2": ("audio", {"backbone": "wav2vec2", "arch": "tiny"}, [
        ("backbone.model.feature_extractor.", "backbone.model.encoder.feature_projection.",
         W2V + "pos_conv_embed.", W2V + "layer_norm."), (W2V + "layers.0.",), (W2V + "layers.1.",)]),
    "ecg": ("ecg", {"length": 64, "base_width": 4, "blocks": [1, 1]}, [
        ("net.stem.",), ("net.stages.0.",), ("net.stages.1.",)]),
    "open_clip-image": ("open_clip", {"tower": "image"}, [
        ("tower.conv1.", "tower.class_embedding", "tower.positional_embedding", "tower.ln_pre."),
        ("tower.transformer.resblocks.0.",), ("tower.transformer.resblocks.1.", "tower.ln_post."), ("tower.proj",)]),
    "open_clip-text": ("open_clip", {"tower": "text"}, [
        ("tower.token_embedding.", "tower.positional_embedding"), ("tower.transformer.resblocks.0.",),
        ("tower.transformer.resblocks.1.", "tower.ln_final."), ("tower.text_projection",)]),
    "vector": ("vector", {"dim": 3, "hidden": [8]}, [("net.",)]),
}


def _build(case, clip_folder, bert_folder):
    plugin, options, _ = GROUPS[case]
    extra = ({"model": str(clip_folder)} if plugin == "open_clip" else
             {"model": str(bert_folder)} if plugin == "text" else {})
    return polyalign.build("encoder", plugin, **options, **extra)


@pytest.mark.parametrize("case", sorted(GROUPS))
def test_each_encoder_groups_its_parameters_stem_first(case, clip_folder, bert_folder):
    encoder = _build(case, clip_folder, bert_folder)
    groups = checked_layer_groups(encoder, case)  # each parameter exactly once
    expected = GROUPS[case][2]
    assert len(groups) == len(expected), [g[:2] for g in groups]
    for names, prefixes in zip(groups, expected):
        assert all(n.startswith(prefixes) for n in names), (prefixes, names)
        assert all(any(n.startswith(p) for n in names) for p in prefixes), (prefixes, names)


@pytest.mark.parametrize("tower", ["image", "text"])
def test_open_clip_groups_are_open_clips_own_lock_groups(tower, clip_folder):
    import open_clip

    encoder = polyalign.build("encoder", "open_clip", model=str(clip_folder), tower=tower)
    clip = open_clip.create_model(f"local-dir:{clip_folder}", force_custom_text=True)
    reference = clip.visual if tower == "image" else clip.text
    groups = checked_layer_groups(encoder, tower)
    for k in range(1, len(groups) + 1):
        reference.lock(k)  # open_clip's LiT locking: the last k groups stay trainable
        theirs = {f"tower.{n}" for n, p in reference.named_parameters() if p.requires_grad}
        assert theirs == {n for g in groups[-k:] for n in g}, k


def test_lock_layers_trains_exactly_the_last_groups_and_refuses_nonsense():
    encoder = polyalign.build("encoder", "byte_text", dim=16, layers=3, heads=2)
    groups = checked_layer_groups(encoder, "t")
    lock_layers(encoder, 2, "modalities.t")
    assert {n for n, p in encoder.named_parameters() if p.requires_grad} == set(groups[2] + groups[3])
    with pytest.raises(PolyalignError, match=r"modalities.t.unlocked_layers: 5, but the encoder has 4 layer group"):
        lock_layers(polyalign.build("encoder", "byte_text", dim=16, layers=3, heads=2), 5, "modalities.t")
    frozen = polyalign.build("encoder", "image", model="test_resnet", image_size=16, freeze=True)
    with pytest.raises(PolyalignError, match=r"modalities.i.unlocked_layers: 1 leaves nothing of the encoder to "
                                             r"train: .*with freeze: true none does"):
        lock_layers(frozen, 1, "modalities.i")


def test_a_plugin_whose_groups_miss_a_parameter_is_named_and_fails_the_kit():
    class Partial(Encoder):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.width = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2), 2

        def load(self, value, root):
            return torch.tensor(value, dtype=torch.float32)

        def forward(self, x):
            return self.b(self.a(x))

        def layer_groups(self):
            return [["a.weight", "a.bias"], ["b.weight", "a.bias"]]

    with pytest.raises(PluginError, match=r"Partial.layer_groups\(\) must list each parameter .* left out: b.bias; "
                                          r"listed twice: a.bias"):
        checked_layer_groups(Partial(), "modalities.x")
    with pytest.raises(ConformanceError, match=r"encoder Partial fails 'layer groups': .* left out: b.bias"):
        check_encoder(Partial(), [[1.0, 2.0], [3.0, 4.0]])


def _recipe(modalities, train, data=None):
    return validate_recipe({"name": "groups", "data": data or {"plugin": "xor"}, "modalities": modalities,
                            "loss": {"plugin": "clip"}, "model": {"embed_dim": 8}, "train": train})


def _rates(model, loss, recipe):
    optimizer, _ = build_optimizer(model, loss, recipe, total_steps=10)
    rate = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    named = {n: p for n, p in model.named_parameters()} | {f"loss.{n}": p for n, p in loss.named_parameters()}
    return {n: rate.get(id(p)) for n, p in named.items()}


def test_layer_decay_on_a_timm_vit_is_timms_own():
    recipe = _recipe({"image": {"encoder": {"plugin": "image", "model": "test_vit", "image_size": 32},
                                "lr_scale": 0.5},
                      "text": {"encoder": {"plugin": "byte_text", "dim": 16, "layers": 2, "heads": 2}}},
                     {"lr": 1e-3, "layer_decay": 0.7})
    model = build_model(recipe, default_plugins())
    rates = _rates(model, polyalign.build("loss", "clip"), recipe)
    vit = timm.create_model("test_vit", num_classes=10)  # timm's layer decay, with its head as the top layer
    groups = param_groups_layer_decay(vit, weight_decay=0.0, layer_decay=0.7)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    theirs = {n: scale[id(p)] for n, p in vit.named_parameters() if not n.startswith("head.")}
    assert len(set(theirs.values())) == 7  # the stem and 6 blocks; the head (left out) is the 8th layer
    for name, s in theirs.items():
        assert rates[f"encoders.image.backbone.{name}"] == pytest.approx(1e-3 * 0.5 * s, rel=1e-12), name
    text = checked_layer_groups(model.encoders["text"], "text")  # 3 groups: 0.7**3, 0.7**2, 0.7
    for i, names in enumerate(text):
        assert [rates[f"encoders.text.{n}"] for n in names] == pytest.approx([1e-3 * 0.7 ** (3 - i)] * len(names))
    heads = {r for n, r in rates.items() if not n.startswith("encoders.")}
    assert heads == {1e-3}  # projection heads and the loss's temperature keep train.lr


def test_frozen_and_locked_parameters_are_not_optimised():
    recipe = _recipe({"a": {"encoder": {"plugin": "byte_text", "dim": 16, "layers": 3, "heads": 2},
                            "unlocked_layers": 1},
                      "b": {"encoder": {"plugin": "image", "model": "test_resnet", "image_size": 16,
                                        "freeze": True}}}, {"lr": 1e-3})
    model = build_model(recipe, default_plugins())
    rates = _rates(model, polyalign.build("loss", "clip"), recipe)
    last = checked_layer_groups(model.encoders["a"], "a")[-1]
    trained = {n for n, r in rates.items() if r is not None and n.startswith("encoders.")}
    assert trained == {f"encoders.a.{n}" for n in last}


def test_training_moves_only_unlocked_layers_at_their_rates(tmp_path):
    """End to end: AdamW's first step moves each trained parameter by lr * |g| / (|g| + eps) (no weight decay,
    constant schedule), so the largest move in a group is its lr; locked layers and their batch-norm
    statistics stay as they were built."""
    write_demo(tmp_path / "data", classes=2, n_train=16, n_val=4, n_test=4, missing_rate=0.0)
    recipe = _recipe(
        {"image": {"encoder": {"plugin": "image", "model": "test_resnet", "image_size": 16}, "unlocked_layers": 2},
         "text": {"encoder": {"plugin": "byte_text", "dim": 16, "layers": 2, "heads": 2}, "lr_scale": 0.1},
         "ecg": {"encoder": {"plugin": "ecg", "length": 64, "base_width": 4, "blocks": [1, 1]},
                 "unlocked_layers": 1, "lr_scale": 0.5}},
        {"lr": 1e-3, "layer_decay": 0.5, "weight_decay": 0.0, "schedule": "constant", "batch_size": 16,
         "max_steps": 1, "epochs": 1, "grad_clip": None},
        data={"plugin": "manifest", "path": str(tmp_path / "data")})
    before = {k: v.clone() for k, v in assemble(recipe).model.state_dict().items()}
    run = polyalign.train(recipe, out=tmp_path / "runs")
    after = {k[len("model."):]: v for k, v in load_file(run / "checkpoints" / "last" / "model.safetensors").items()
             if k.startswith("model.")}
    model = build_model(recipe, default_plugins())
    expected = {  # modality -> lr of each layer group (None: locked)
        "image": [None, None, None, 1e-3 * 0.5 ** 2, 1e-3 * 0.5],
        "text": [1e-3 * 0.1 * 0.5 ** (3 - i) for i in range(3)],
        "ecg": [None, None, 1e-3 * 0.5 * 0.5]}
    for m, rates in expected.items():
        groups = checked_layer_groups(model.encoders[m], m)
        assert len(groups) == len(rates), m
        for names, lr in zip(groups, rates):
            moved = max(float((after[f"encoders.{m}.{n}"] - before[f"encoders.{m}.{n}"]).abs().max()) for n in names)
            if lr is None:
                assert moved == 0.0, (m, names[0])
            else:
                assert 0.9 * lr < moved < lr + 2e-7, (m, names[0], moved, lr)  # + float32 rounding of the weights
    for stats in ("running_mean", "running_var"):  # the locked stem's batch norm kept its statistics
        assert torch.equal(after[f"encoders.ecg.net.stem.1.{stats}"], before[f"encoders.ecg.net.stem.1.{stats}"])
        assert not torch.equal(after[f"encoders.ecg.net.stages.1.body.1.{stats}"],
                               before[f"encoders.ecg.net.stages.1.body.1.{stats}"])
