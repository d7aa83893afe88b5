"""The documentation site builds with `mkdocs build --strict` (a warning fails it) and its pages
hold the repository's text, working links and the API reference."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_every_page_of_the_nav_is_built(site):
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in re.findall(r":\s*([\w-]+)\.md\s*$", nav, flags=re.M):
        built = site / ("index.html" if page == "index" else f"{page}/index.html")
        assert built.is_file(), page


def test_home_page_is_the_readme_with_links_that_work_in_the_site(site):
    html = (site / "index.html").read_text()
    assert "A five-minute tour" in html and "Binary XOR" in html
    assert 'href="writing-a-plugin/"' in html and 'href="using-a-trained-model/"' in html
    assert not re.search(r'href="(docs/|[^"]*\.md)', html)  # no link left pointing at a repository file


def test_pages_moved_out_of_the_readme_keep_their_links_and_images(site):
    html = (site / "using-a-trained-model" / "index.html").read_text()
    assert 'href="../benchmarks/#search-over-a-million-candidates"' in html
    assert 'src="../img/xor-symile-vs-clip.png"' in html and (site / "img" / "xor-symile-vs-clip.png").is_file()
    assert "<code>examples/polyalign-imu</code> in the repository" in (site / "your-files" / "index.html").read_text()
    results = (site / "results" / "index.html").read_text()
    assert 'href="../#binary-xor-what-only-an-n-way-objective-can-see-symile-paper-51"' in results
    for page in ("using-a-trained-model", "your-files", "results", "missing-modalities"):
        text = (site / page / "index.html").read_text()
        assert not re.search(r'href="(docs/|[^"]*\.md)', text), page


def test_readme_is_short_and_its_sections_live_once():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 250
    pages = [p.read_text() for p in (ROOT / "docs").glob("*.md")]
    for line in readme.splitlines():
        if len(line) > 60 and not line.startswith(("#", "|", "-", "pip ", "polyalign ")):
            assert not any(line in page for page in pages), f"README line also in docs: {line}"


def test_benchmarks_page_is_benchmarks_md(site):
    html = (site / "benchmarks" / "index.html").read_text()
    assert "Loss functions: forward + backward time and peak memory" in html
    assert "Search over a million candidates" in html


def test_api_reference_documents_the_public_api_and_every_hook(site):
    html = (site / "api" / "index.html").read_text()
    for name in ("build", "load_recipe", "train", "evaluate", "load", "inference.trained.TrainedModel.search",
                 "core.loss.Loss.inner_product_query", "core.loss.Loss.score", "core.encoder.Encoder.export_example"):
        assert f'id="polyalign.{name}"' in html, name
    import polyalign.core.hookspecs as hookspecs

    hooks = [n for n in dir(hookspecs) if n.startswith(("on_", "register_"))]
    for check in ("check_encoder", "check_loss", "check_dataset", "check_evaluator"):
        assert f'id="polyalign.testing.{check}"' in html, check
    assert len(hooks) >= 10
    for hook in hooks:
        assert f'id="polyalign.core.hookspecs.{hook}"' in html, hook


def test_plugin_options_pages_list_every_built_in_option(site):
    from polyalign.commands.options_reference import KIND_TITLES, options
    from polyalign.core.plugin_manager import default_plugins

    registry = default_plugins().registry
    for kind, title in KIND_TITLES.items():
        html = (site / "options" / title.lower() / "index.html").read_text()
        for comp in registry.components(kind):
            if comp.plugin.startswith("polyalign:"):
                assert f"<code>{comp.name}</code>" in html, (kind, comp.name)
                for option in options(comp.config):
                    assert f"<code>{option.name}</code>" in html, (kind, comp.name, option.name)
    encoders = (site / "options" / "encoders" / "index.html").read_text()
    assert "input size; default: from the data" in encoders and "lora.r" in encoders
