"""The package's rooms import downwards only: cli -> inference/evaluation/training -> core."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "polyalign"

# room -> the rooms it must not import (``run`` is polyalign/run.py, ``cli`` polyalign/cli.py)
FORBIDDEN = {
    "core": {"training", "evaluation", "inference", "encoders", "plugins", "testing", "run", "cli", "shipped",
             "sweep"},
    "training": {"evaluation", "inference", "encoders", "plugins", "run", "cli", "sweep"},
    "evaluation": {"training", "inference", "encoders", "plugins", "run", "cli", "sweep"},
    "inference": {"training", "evaluation", "encoders", "plugins", "run", "cli", "sweep"},
    "encoders": {"training", "evaluation", "inference", "plugins", "run", "cli", "sweep"},
    "plugins": {"training", "evaluation", "inference", "encoders", "run", "cli", "sweep"},
    "serving": {"training", "evaluation", "encoders", "plugins", "run", "cli", "sweep"},
    "sweep": {"encoders", "plugins", "cli"},  # orchestrates runs: above run.py, below the command line
}


def imported_rooms(path: Path) -> set[tuple[str, int]]:
    """(room, line) for every ``polyalign.<room>`` a module imports, at any depth in the file."""
    found = set()
    room_of_file = path.relative_to(PACKAGE).parts[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: stays in its own room unless it climbs out of it
                if node.level > len(path.relative_to(PACKAGE).parts) - 1:
                    names = [f"polyalign.{node.module or ''}"]
                else:
                    names = [f"polyalign.{room_of_file}"]
            elif node.module:
                names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "polyalign":
                found.add((parts[1].removesuffix(".py") if len(parts) > 1 else "", node.lineno))
    return found


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_rooms_import_downwards_only(room):
    folder = PACKAGE / room
    assert folder.is_dir() and (folder / "__init__.py").is_file()
    wrong = [f"{path.relative_to(PACKAGE.parent)}:{line} imports polyalign.{target}"
             for path in sorted(folder.rglob("*.py"))
             for target, line in sorted(imported_rooms(path)) if target in FORBIDDEN[room] or target == ""]
    assert not wrong, "\n".join(wrong)



def test_only_the_cli_imports_the_server():
    """FastAPI and uvicorn load only when `polyalign serve` runs: no other room imports polyalign.serving."""
    users = [str(path.relative_to(PACKAGE)) for path in sorted(PACKAGE.rglob("*.py"))
             if path.relative_to(PACKAGE).parts[0] not in ("serving", "cli.py")
             and "serving" in {room for room, _ in imported_rooms(path)}]
    assert not users, users


def test_the_plugin_kit_uses_only_core_and_the_public_api():
    rooms = {room for room, _ in imported_rooms(PACKAGE / "testing.py")}
    assert rooms <= {"core", ""}, rooms  # "" = `import polyalign` for polyalign.build
