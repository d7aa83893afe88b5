"""``grad_checkpointing: true`` on every built-in encoder with blocks, both open_clip towers included:
the same outputs, gradients and running statistics as without it, with fewer activations kept."""

from __future__ import annotations

import pytest
import torch

import polyalign
from polyalign.core.errors import PolyalignError

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "circle", "blue", "square"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A 2-layer BERT with dropout, saved to a local folder (no download)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    BertTokenizerFast(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A 2-layer open_clip model folder with random weights (no download)."""
    from polyalign.plugins.encoders.open_clip import save_random_model

    folder = tmp_path_factory.mktemp("tiny-clip")
    save_random_model(folder, {"embed_dim": 16, "vision_cfg": {"image_size": 24, "patch_size": 8, "width": 32,
                                                               "layers": 2, "head_width": 16},
                               "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 2,
                                            "layers": 2}})
    return folder


def _tokens(rows: int, length: int, vocab: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(rows, length, dtype=torch.long)
    mask[0, length // 2:] = 0  # padding in one row
    return {"input_ids": torch.randint(5, vocab, (rows, length), generator=g), "attention_mask": mask}


CASES = {  # name: (plugin, options, input); every backbone has dropout or BatchNorm where it can
    "image-resnet": ("image", {"model": "resnet10t", "image_size": 32},
                     lambda _: torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))),
    "image-vit": ("image", {"model": "vit_tiny_patch16_224", "image_size": 32,
                            "timm_kwargs": {"depth": 2, "patch_size": 8, "drop_rate": 0.1}},
                  lambda _: torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))),
    "text": ("text", {},
             lambda _: {**_tokens(4, 7, len(WORDS)), "token_type_ids": torch.zeros(4, 7, dtype=torch.long)}),
    "byte_text": ("byte_text", {"dim": 16, "layers": 2, "heads": 2, "max_length": 12, "dropout": 0.2},
                  lambda _: _tokens(4, 12, 258)),
    "audio-cnn": ("audio", {"sample_rate": 8000, "clip_seconds": 0.5, "n_mels": 16, "n_fft": 128,
                            "channels": [4, 8, 8]},
                  lambda _: torch.randn(4, 4000, generator=torch.Generator().manual_seed(1))),
    "audio-wav2vec2": ("audio", {"backbone": "wav2vec2", "arch": "tiny", "clip_seconds": 0.25},
                       lambda _: torch.randn(4, 4000, generator=torch.Generator().manual_seed(1))),
    "open_clip-image": ("open_clip", {"tower": "image"},
                        lambda _: torch.randn(4, 3, 24, 24, generator=torch.Generator().manual_seed(1))),
    "open_clip-text": ("open_clip", {"tower": "text"},
                       lambda _: torch.randint(1, 49407, (4, 12), generator=torch.Generator().manual_seed(1))),
    "ecg": ("ecg", {"leads": 3, "length": 200, "base_width": 4, "blocks": [1, 1]},
            lambda _: torch.randn(4, 3, 200, generator=torch.Generator().manual_seed(1))),
}


def _run(plugin: str, options: dict, x, checkpointing: bool):
    torch.manual_seed(0)
    enc = polyalign.build("encoder", plugin, **options, grad_checkpointing=checkpointing).train()
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    torch.manual_seed(2)  # the same dropout draws in both runs
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = enc(x)
    (out * torch.linspace(-1, 1, out.shape[1])).sum().backward()
    grads = {n: p.grad for n, p in enc.named_parameters() if p.grad is not None}
    return out.detach(), grads, dict(enc.named_buffers()), saved[0]


@pytest.mark.parametrize("case", CASES)
def test_checkpointing_changes_memory_not_results(case, request):
    plugin, options, make = CASES[case]
    if plugin == "text":
        options = {"model": str(request.getfixturevalue("tiny_bert"))}
    if plugin == "open_clip":
        options = {**options, "model": str(request.getfixturevalue("tiny_clip"))}
    x = make(None)
    out, grads, buffers, saved = _run(plugin, options, x, False)
    out_c, grads_c, buffers_c, saved_c = _run(plugin, options, x, True)
    torch.testing.assert_close(out_c, out, rtol=1e-5, atol=1e-6)
    assert grads_c.keys() == grads.keys() and grads
    for k in grads:
        torch.testing.assert_close(grads_c[k], grads[k], rtol=1e-4, atol=1e-6, msg=k)
    if case != "image-resnet":  # timm's own checkpointing updates BatchNorm statistics again on recompute
        for k in buffers:
            torch.testing.assert_close(buffers_c[k], buffers[k], rtol=0, atol=0, msg=k)
    assert saved_c < 0.8 * saved, (saved_c, saved)


def test_checkpointing_keeps_state_dict_keys():
    plain = polyalign.build("encoder", "ecg", leads=3, length=200, base_width=4)
    ckpt = polyalign.build("encoder", "ecg", leads=3, length=200, base_width=4, grad_checkpointing=True)
    assert list(plain.state_dict()) == list(ckpt.state_dict())
    ckpt.load_state_dict(plain.state_dict())


def test_image_model_without_checkpointing_support_is_refused():
    with pytest.raises(PolyalignError, match=r"does not support gradient checkpointing"):
        polyalign.build("encoder", "image", model="dla46_c", image_size=32,
                        grad_checkpointing=True)
