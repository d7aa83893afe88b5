"""Errors meant for people: each says what was wrong, where, and what to do."""

from __future__ import annotations


class PolyalignError(Exception):
    """An error the CLI prints as one clear message (no traceback)."""


class RecipeError(PolyalignError):
    """A recipe failed validation; ``problems`` holds every (yaml_path, message) pair."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [f"{source}: {len(problems)} problem(s) in the recipe:"]
        lines += [f"  {path or '<root>'}: {msg}" for path, msg in problems]
        super().__init__("\n".join(lines))


class PluginError(PolyalignError):
    """A plugin was missing, registered twice, or returned something it should not."""
