"""Safety: loading a checkpoint or a recipe never runs code; plugin loading is explicit and one
broken plugin is reported (with its distribution) without taking down the others."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import polyalign
from polyalign.cli import main
from polyalign.core.errors import PolyalignError, RecipeError
from polyalign.core.plugin_manager import describe, make_plugins
from polyalign.files.weights import STATE, WEIGHTS, CheckpointError, load_state

ROOT = Path(__file__).resolve().parents[1]
XOR = ROOT / "recipes" / "xor-clip.yaml"
TINY = ["data.n_train=128", "data.n_val=32", "data.n_test=32", "train.batch_size=32", "train.epochs=1"]




class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _torch_payload(path: Path, marker: Path) -> None:
    torch.save({"step": 3, "optimizer": Payload(marker)}, path)


def _raw_pickle_payload(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"step": 3, "rng": Payload(marker)}))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    return polyalign.train(XOR, out=tmp_path_factory.mktemp("run"), overrides=TINY)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("craft, proof", [
    (_torch_payload, lambda p: torch.load(p, weights_only=False)),
    (_raw_pickle_payload, lambda p: pickle.loads(p.read_bytes())),
])
def test_state_file_with_code_is_refused_and_not_run(craft, proof, finished_run, tmp_path, capsys):
    # the crafted file really runs code when unpickled the unsafe way
    craft(tmp_path / "probe.pt", tmp_path / "PROOF")
    proof(tmp_path / "probe.pt")
    assert (tmp_path / "PROOF").exists()
    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    marker = tmp_path / "PWNED"
    craft(run / "checkpoints" / "last" / STATE, marker)
    with pytest.raises(CheckpointError, match="refused to load .*state.pt.*never pickled code"):
        load_state(run / "checkpoints" / "last")
    code = main(["train", "--resume", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and "refused to load" in err and "Traceback" not in err
    assert "weights_only" not in err and "trusted source" not in err  # never the advice to load it unsafely
    assert not marker.exists()


def test_state_file_of_the_wrong_shape_is_refused(finished_run, tmp_path, capsys):
    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    state = load_state(run / "checkpoints" / "last")
    del state["rng"]
    torch.save(state, run / "checkpoints" / "last" / STATE)
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "cannot resume from" in err and "KeyError: 'rng'" in err and "Traceback" not in err


def test_eval_reads_only_safetensors_weights(finished_run, tmp_path, capsys):
    run = Path(shutil.copytree(finished_run, tmp_path / "run"))
    marker = tmp_path / "PWNED"
    _torch_payload(run / "checkpoints" / "last" / STATE, marker)
    assert main(["eval", str(run)]) == 0  # evaluation never opens state.pt
    assert not marker.exists()
    # a weights file that is not safetensors (here: a pickle) is refused with its path
    _torch_payload(run / "checkpoints" / "last" / WEIGHTS, marker)
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'checkpoints' / 'last' / WEIGHTS} is not a valid safetensors file" in err
    assert not marker.exists()


def test_encoder_weights_file_with_code_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "resnet.pth"
    _torch_payload(evil, marker)
    with pytest.raises(PolyalignError, match=re.escape(str(evil))):
        polyalign.build("encoder", "image", model="test_resnet", image_size=32, pretrained=str(evil))
    assert not marker.exists()


def test_recipe_cannot_name_python(tmp_path):
    marker = tmp_path / "PWNED"
    for overrides in (["loss.plugin=os.system"], ["data.plugin=subprocess.run"],
                      [f"name=!!python/object/apply:os.system ['touch {marker}']"],
                      ["loss={plugin: !!python/name:os.system }"]):
        with pytest.raises(RecipeError):
            polyalign.load_recipe(XOR, overrides)
    assert not marker.exists()


def _call_arguments(text: str, open_paren: int) -> str:
    """The text between the parenthesis at ``open_paren`` and its matching close."""
    depth = 0
    for i in range(open_paren, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[open_paren + 1:i]
    return text[open_paren + 1:]


def test_source_loads_nothing_unsafely():
    """A guard on the code base: every unpickling is weights-only, every YAML load is safe."""
    bad = []
    for path in sorted((ROOT / "polyalign").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for call, needed in (("torch.load", "weights_only=True"), ("np.load", "allow_pickle=False")):
            for match in re.finditer(re.escape(call) + r"\(", text):
                if needed not in _call_arguments(text, match.end() - 1):
                    bad.append(f"{path.name}: {call} without {needed}")
        for pattern in (r"\bpickle\.loads?\(", r"yaml\.(unsafe_|full_)?load\(", r"(?<![\w.])eval\(",
                        r"(?<![\w.])exec\(", r"__import__\(", r"import_module\(", r"trust_remote_code\s*=\s*True",
                        r"yaml\.(Unsafe)?Loader"):
            if re.search(pattern, text):
                bad.append(f"{path.name}: {pattern}")
    assert not bad, bad


# --------------------------------------------------------------------------- plugin loading
PLUGIN_SOURCES = {
    "polyalign-good": """
        import polyalign

        @polyalign.hookimpl
        def register_losses(register):
            from polyalign.plugins.losses.clip import ClipConfig, build_clip
            register("good_clip", build_clip, config=ClipConfig, help="clip under another name")
    """,
    "polyalign-raising": """
        import polyalign

        @polyalign.hookimpl
        def register_losses(register):
            register("boom", None)
            raise RuntimeError("boom while registering")
    """,
    "polyalign-typo": """
        import polyalign

        @polyalign.hookimpl
        def register_lossess(register):
            register("typo", None)
    """,
    "polyalign-badargs": """
        import polyalign

        @polyalign.hookimpl
        def register_losses(registr):
            registr("badargs", None)
    """,
    "polyalign-unimportable": "import a_module_that_is_not_installed\n",
}


@pytest.fixture
def plugin_site(tmp_path, monkeypatch) -> Path:
    """Five fake installed distributions with a ``polyalign`` entry point each."""
    for dist, body in PLUGIN_SOURCES.items():
        module = dist.replace("-", "_") + f"_{tmp_path.name[-8:].replace('-', '_')}"
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(body))
        info = tmp_path / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[polyalign]\n{dist.split('-')[1]} = {module}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("POLYALIGN_PLUGINS", raising=False)
    return tmp_path


def test_each_broken_plugin_is_reported_and_the_others_load(plugin_site):
    plugins = make_plugins()
    listing = describe(plugins)
    by_dist = {p["distribution"]: p for p in listing["plugins"]}
    assert by_dist["polyalign-good"]["error"] is None
    assert "register_losses failed: RuntimeError: boom while registering" in by_dist["polyalign-raising"]["error"]
    assert "register_lossess" in by_dist["polyalign-typo"]["error"] and "unknown hook" in by_dist["polyalign-typo"]["error"]
    assert "invalid hook" in by_dist["polyalign-badargs"]["error"] and "registr" in by_dist["polyalign-badargs"]["error"]
    assert "No module named 'a_module_that_is_not_installed'" in by_dist["polyalign-unimportable"]["error"]
    losses = [c["name"] for c in listing["losses"]]
    assert "good_clip" in losses and "clip" in losses
    assert not {"boom", "typo", "badargs"} & set(losses)  # nothing half-registered
    assert "vector" in [c["name"] for c in listing["encoders"]]
    # a recipe asking for the broken plugin's loss hears why it is missing
    with pytest.raises(RecipeError) as info:
        polyalign.load_recipe(XOR, ["loss.plugin=boom"], plugins=plugins)
    msg = str(info.value)
    assert "loss.plugin: unknown loss 'boom'" in msg
    assert "polyalign-raising (raising): register_losses failed" in msg
    # the good one trains-validates as usual
    assert polyalign.load_recipe(XOR, ["loss.plugin=good_clip"], plugins=plugins).losses[0].plugin == "good_clip"


def test_polyalign_plugins_restricts_external_plugins(plugin_site, monkeypatch):
    monkeypatch.setenv("POLYALIGN_PLUGINS", "polyalign-good")
    dists = {p.distribution: p for p in make_plugins().loaded}
    assert set(dists) == {"polyalign", "polyalign-good"}  # the broken ones are not even imported
    assert all(p.error is None for p in dists.values())
    assert not any(m.startswith("polyalign_unimportable") for m in sys.modules)
    monkeypatch.setenv("POLYALIGN_PLUGINS", "")
    assert {p.distribution for p in make_plugins().loaded} == {"polyalign"}
