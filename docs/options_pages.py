"""mkdocs hook: the plugin options reference, one page per kind (options/encoders.md ...), made at
build time from the built-in plugins' pydantic config models, so it cannot fall out of date."""

from __future__ import annotations

from mkdocs.structure.files import File

from polyalign.commands.options_reference import KIND_TITLES, kind_page
from polyalign.core.plugin_manager import BUILTIN_DIST, make_plugins


def page_name(kind: str) -> str:
    """The site path of a kind's page: ``options/encoders.md``."""
    return f"options/{KIND_TITLES[kind].lower()}.md"


def on_files(files, config):
    """Add a generated options page per kind, listing the built-in components only."""
    registry = make_plugins().registry
    for kind in KIND_TITLES:
        builtin = [c for c in registry.components(kind) if c.plugin.startswith(f"{BUILTIN_DIST}:")]
        files.append(File.generated(config, page_name(kind), content=kind_page(kind, builtin)))
    return files
