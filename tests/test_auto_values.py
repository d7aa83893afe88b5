"""What each ``auto`` of a recipe stood for: written into the run's recipe.yaml, printed at train start, shown by
``polyalign validate``."""

from __future__ import annotations

import re
from pathlib import Path

import torch
import yaml

import polyalign
from polyalign.cli import main
from polyalign.core.device import resolved_precision
from polyalign.training.threads import auto_threads

XOR = Path(__file__).resolve().parents[1] / "polyalign" / "recipes" / "xor-symile.yaml"
# 2 steps of 512: 512^3 logits a batch is above Symile's 2^24, so its negatives: auto trains per_modality
TINY = ["data.n_train=1024", "data.n_val=64", "data.n_test=64", "train.batch_size=512", "train.epochs=1",
        "train.warmup_steps=0", "logging=[]", "loss.negatives=auto"]


def test_a_run_records_and_prints_what_each_auto_stood_for(tmp_path, capsys):
    run = polyalign.train(XOR, out=tmp_path, overrides=TINY)
    text = (run / "recipe.yaml").read_text()
    chose = dict(re.findall(r"^# (\S+): auto -> (.+) on this machine$", text, re.M))
    saved = yaml.safe_load(text)
    assert chose["loss.negatives"] == "per_modality" and saved["loss"]["negatives"] == "auto"
    assert chose["train.device"] == "cpu" and chose["train.precision"] == "fp32" and saved["train"]["device"] == "auto"
    assert chose["train.num_workers"] == "0" and saved["train"]["num_workers"] == 0  # numbers only: no workers
    assert chose["train.threads"] == str(saved["train"]["threads"]) == str(auto_threads(0))
    err = capsys.readouterr().err
    assert "loss.negatives: auto -> per_modality on this machine" in err
    assert f"train.threads: auto -> {auto_threads(0)} on this machine" in err
    assert polyalign.load_recipe(run / "recipe.yaml").train.device == "auto"  # the comments load as a recipe


def test_validate_says_what_each_auto_stands_for_here_and_a_list_loss_names_its_term(capsys):
    assert main(["validate", str(XOR), "loss=[{plugin: clip}, {plugin: symile}]", "train.batch_size=32"]) == 0
    printed = capsys.readouterr().out
    assert "loss.1.negatives: auto -> n_squared on this machine" in printed  # 32^3 logits: affordable
    assert "model.spaces: auto -> per_term on this machine" in printed  # two scoring terms: a space each
    assert "train.precision: auto -> fp32 on this machine" in printed and "train.device: auto -> cpu" in printed
    assert "train.num_workers: auto -> 0 for train rows of numbers only, else" in printed
    assert main(["validate", str(XOR), "train.threads=3", "train.precision=bf16"]) == 0
    printed = capsys.readouterr().out
    assert "train.threads" not in printed and "train.precision" not in printed  # not auto: nothing to say
    assert resolved_precision("auto", torch.device("cuda")) == "bf16" and resolved_precision("fp16",
                                                                                          torch.device("cpu")) == "fp16"
