"""mkdocs hook: docstrings name objects with Sphinx roles (:class:`Loss`); show just the name in code."""

from __future__ import annotations

import re

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):(?=<code>)")


def on_page_content(html, page, config, files):
    """Drop the role prefix that mkdocstrings leaves in front of the code span."""
    return ROLE.sub("", html)
