"""mkdocs hook: repository files as pages (README.md is the home page, BENCHMARKS.md the benchmarks),
so the site shows the same text as the repository, and links that leave the site made plain text.

Links in every page are read relative to where the page's text lives in the repository; a link to a
file under ``docs/`` becomes a link within the site, ``README.md`` and ``BENCHMARKS.md`` their pages,
and a link to any other file of the repository (an example package, a results file) its path in
code, since the site does not hold it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT_PAGES = {"index.md": "README.md", "benchmarks.md": "BENCHMARKS.md"}  # site page -> repository file
LINK = re.compile(r"(!?)\[([^\]]*)\]\(([^)\s]+)\)")


def on_files(files, config):
    """Add the repository files of :data:`ROOT_PAGES` as generated pages."""
    root = Path(config.config_file_path).parent
    for page, source in ROOT_PAGES.items():
        files.append(File.generated(config, page, content=(root / source).read_text(encoding="utf-8")))
    return files


def site_target(repo_path: str, page_dir: str) -> str | None:
    """Where a repository path is in the site, relative to ``page_dir`` (None: not in the site)."""
    pages = {source: page for page, source in ROOT_PAGES.items()}
    if repo_path in pages:
        inside = pages[repo_path]
    elif repo_path.startswith("docs/"):
        inside = repo_path[len("docs/"):]
    else:
        return None
    return posixpath.relpath(inside, page_dir or ".")


def on_page_markdown(markdown, page, config, files):
    """Rewrite relative links from repository paths to site paths."""
    uri = page.file.src_uri
    origin_dir = posixpath.dirname(ROOT_PAGES.get(uri) or f"docs/{uri}")

    def rewrite(match: re.Match) -> str:
        bang, text, target = match.groups()
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", target):
            return match.group(0)
        path, _, anchor = target.partition("#")
        repo_path = posixpath.normpath(posixpath.join(origin_dir, path))
        inside = site_target(repo_path, posixpath.dirname(uri))
        if inside is None:
            return f"{text} (`{repo_path}` in the repository)" if text else f"`{repo_path}`"
        return f"{bang}[{text}]({inside}{'#' + anchor if anchor else ''})"

    return LINK.sub(rewrite, markdown)
