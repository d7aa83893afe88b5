"""LoRA through peft on the image, text and open_clip encoders, and its merge for export."""

from __future__ import annotations

import sys

import pytest
import torch
from pydantic import ValidationError

import polyalign
from polyalign.core.errors import PolyalignError
from polyalign.core.layer_groups import checked_layer_groups, lock_layers
from polyalign.plugins.encoders.open_clip import WEIGHTS_FILE, save_random_model

TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 2, "head_width": 16},
             "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny open_clip model folder and a tiny BERT folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    clip = tmp_path_factory.mktemp("clip")
    save_random_model(clip, TINY_CLIP)
    bert = tmp_path_factory.mktemp("bert")
    BertTokenizerFast(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "cat"])}
                      ).save_pretrained(bert)
    BertModel(BertConfig(vocab_size=6, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=16)).save_pretrained(bert)
    return {"clip": clip, "bert": bert}


# plugin, options, an input maker, the modules that get adapters by default (name suffixes)
CASES = {
    "image": ("image", lambda f: {"model": "test_vit", "image_size": 32},
              lambda: torch.randn(2, 3, 32, 32), ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")),
    "text": ("text", lambda f: {"model": str(f["bert"])},
             lambda: {"input_ids": torch.tensor([[2, 4, 5, 3], [2, 5, 3, 0]]),
                      "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
                      "token_type_ids": torch.zeros(2, 4, dtype=torch.long)},
             ("query", "key", "value", "dense")),
    "open_clip-image": ("open_clip", lambda f: {"model": str(f["clip"]), "tower": "image",
                                                "pretrained": str(f["clip"] / WEIGHTS_FILE)},
                        lambda: torch.randn(2, 3, 16, 16), ("attn", "c_fc", "c_proj")),
    "open_clip-text": ("open_clip", lambda f: {"model": str(f["clip"]), "tower": "text",
                                               "pretrained": str(f["clip"] / WEIGHTS_FILE)},
                       lambda: torch.randint(1, 49000, (2, 12)), ("attn", "c_fc", "c_proj")),
}


def _build(plugin, options, seed=0):
    torch.manual_seed(seed)
    return polyalign.build("encoder", plugin, **options).eval()


@pytest.mark.parametrize("case", sorted(CASES))
def test_only_adapters_train_and_the_merge_is_the_adapted_model(case, folders):
    plugin, options, make_input, targets = CASES[case]
    options = options(folders)
    plain = _build(plugin, options)
    adapted = _build(plugin, {**options, "lora": {"r": 4, "alpha": 8}})
    trained = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert trained and all(".lora_A." in n or ".lora_B." in n for n in trained)
    adapted_modules = {n.split(".lora_")[0].removesuffix(".base_layer") for n in trained}
    assert {t for t in targets if any(m.endswith(t) for m in adapted_modules)} == set(targets)
    groups = checked_layer_groups(adapted, case)  # the adapters sit in their blocks' groups
    assert len(groups) == len(checked_layer_groups(plain, case)) > 2
    lock_layers(adapted, 2, case)  # unlocked_layers: 2 leaves only the adapters of the last 2 groups training
    assert {n for n, p in adapted.named_parameters() if p.requires_grad} == set(trained) & {*groups[-2], *groups[-1]}
    assert 0 < len(set(trained) & {*groups[-2], *groups[-1]}) < len(trained)
    x = make_input()
    with torch.no_grad():
        torch.testing.assert_close(adapted(x), plain(x))  # adapters start as a zero update
        for name, p in adapted.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.1)
        before = adapted(x)
        assert not torch.allclose(before, plain(x), atol=1e-3)
        options_after = adapted.merge_for_export()
        merged = adapted(x)
    assert options_after["lora"] is None
    torch.testing.assert_close(merged, before, rtol=1e-4, atol=1e-5)
    rebuilt = _build(plugin, {**options, **options_after}, seed=1)  # what the export's recipe builds
    assert list(rebuilt.state_dict()) == list(plain.state_dict())
    assert set(adapted.state_dict()) == set(plain.state_dict())
    rebuilt.load_state_dict(adapted.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), merged)
    assert not any("lora" in n for n, _ in rebuilt.named_modules())
    assert len(checked_layer_groups(adapted, case)) == len(groups)


def test_adapters_on_a_projection_attention_bypasses_are_refused(folders):
    options = CASES["open_clip-image"][1](folders)
    with pytest.raises(PolyalignError, match=r"output projection inside nn.MultiheadAttention "
                                             r"\(transformer.resblocks.0.attn\).*Target the attention module "
                                             r"itself \('attn'\)"):
        polyalign.build("encoder", "open_clip", **options, lora={"target_modules": ["out_proj"]})
    with pytest.raises(PolyalignError, match=r"lora.target_modules \['qkvv'\] .*not found.* include: "):
        polyalign.build("encoder", "image", model="test_vit", image_size=32, lora={"target_modules": ["qkvv"]})


def test_lora_options_are_validated_and_peft_is_named_when_missing(monkeypatch):
    with pytest.raises(ValidationError, match="r\n  Input should be greater than or equal to 1"):
        polyalign.build("encoder", "image", model="test_vit", lora={"r": 0})
    with pytest.raises(ValidationError, match="set one of them"):
        polyalign.build("encoder", "text", model="x", freeze=True, lora={})
    monkeypatch.setitem(sys.modules, "peft", None)  # as if peft were not installed
    with pytest.raises(PolyalignError, match=r"encoder 'image': lora needs the peft package: pip install "
                                             r"'polyalign\[lora\]'"):
        polyalign.build("encoder", "image", model="test_vit", image_size=32, lora={})
