"""The wheel, as a user of the published package gets it: built from the source, installed in a fresh
virtual environment, it lists the shipped recipes and trains one by name."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
from conftest import ROOT, TINY_XOR

pytestmark = pytest.mark.slow  # builds and installs a wheel, then trains in a new process


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "POLYALIGN_PLUGINS")}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding the wheel of this checkout; it sees the test environment's dependencies
    (a path line in a .pth) but not its editable polyalign (whose own .pth is not processed)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy: building in the checkout would leave build/ and *.egg-info there
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "polyalign", source / "polyalign", ignore=shutil.ignore_patterns("__pycache__"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"),
          str(source)], cwd=tmp)
    (wheel,) = (tmp / "dist").glob("polyalign-*.whl")
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp).stdout.strip())
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "test_environment.pth").write_text("".join(f"{path}\n" for path in sorted(outer)))
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-build-isolation", "-q",
          str(wheel)], cwd=tmp)
    return env_dir


def test_the_installed_wheel_is_the_one_imported(installed, tmp_path):
    code = ("import polyalign, polyalign.shipped as s; "
            "print(polyalign.__file__); print(s.shipped_recipes()['xor-symile'])")
    module, recipe = _run([str(installed / "bin" / "python"), "-c", code], cwd=tmp_path).stdout.split()
    assert Path(module).is_relative_to(installed) and Path(recipe).is_relative_to(installed), (module, recipe)
    assert not Path(module).is_relative_to(ROOT)


def test_the_installed_command_lists_the_recipes_and_trains_one_by_name(installed, tmp_path):
    polyalign = str(installed / "bin" / "polyalign")
    listed = _run([polyalign, "recipes"], cwd=tmp_path).stdout
    shipped = sorted(path.stem for path in (ROOT / "polyalign" / "recipes").glob("*.yaml"))
    assert shipped and all(name in listed for name in shipped), listed
    assert "polyalign train xor-symile" in listed
    _run([polyalign, "train", "xor-symile", "--out", "runs", *TINY_XOR], cwd=tmp_path)
    (run,) = (tmp_path / "runs").iterdir()
    rows = json.loads((run / "eval" / "report.json").read_text())
    assert any(r["metric"] == "accuracy" and r["target"] == "b" for r in rows), rows
