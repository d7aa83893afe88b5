"""The package's layout: rooms import downwards only (cli -> inference/evaluation/training -> core -> files),
no two modules or rooms share a name, and no module imports itself through others."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "polyalign"

# room -> the rooms it must not import (``run`` is polyalign/run.py, ``cli`` polyalign/cli.py)
ABOVE_CORE = {"training", "evaluation", "inference", "plugins", "testing", "run", "cli", "shipped", "sweep", "serving",
              "commands"}
FORBIDDEN = {
    "files": ABOVE_CORE,  # readers and writers: polyalign.core.errors is all they use of the core
    "core": ABOVE_CORE,
    "training": {"evaluation", "inference", "plugins", "run", "cli", "sweep", "serving", "commands"},
    "evaluation": {"training", "inference", "plugins", "run", "cli", "sweep", "serving", "commands"},
    "inference": {"training", "evaluation", "plugins", "run", "cli", "sweep", "serving", "commands"},
    "plugins": {"training", "evaluation", "inference", "run", "cli", "sweep", "serving", "commands"},
    "serving": {"training", "evaluation", "plugins", "run", "cli", "sweep", "commands"},
    "sweep": {"plugins", "cli", "serving", "commands"},  # orchestrates runs: above run.py, below the command line
    "commands": {"training", "evaluation", "inference", "plugins", "run", "cli", "sweep", "serving"},
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
    assert rooms <= {"core", "files", ""}, rooms  # "" = `import polyalign` for polyalign.build


def test_files_use_only_the_core_errors():
    """The readers' room sits below the core: of the core it uses only the error types."""
    wrong = []
    for path in sorted((PACKAGE / "files").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("polyalign.core") \
                    and node.module != "polyalign.core.errors":
                wrong.append(f"{path.name}:{node.lineno} imports {node.module}")
    assert not wrong, wrong


def test_no_two_modules_or_rooms_share_a_name():
    names: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*")):
        if path.name in ("__init__.py", "__main__.py") or "__pycache__" in path.parts or path.name == "page":
            continue
        if path.is_dir() or path.suffix == ".py":
            names.setdefault(path.stem, []).append(str(path.relative_to(PACKAGE)))
    assert not {n: where for n, where in names.items() if len(where) > 1}


def module_imports() -> dict[str, set[str]]:
    """Module -> the polyalign modules it imports (at any depth, TYPE_CHECKING blocks included)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = (path, package)
    graph: dict[str, set[str]] = {}
    for name, (path, package) in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                targets |= {f"{module}.{a.name}" for a in node.names} | {module}
        graph[name] = {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
    return graph


def test_no_import_cycles():
    """Following imports from any module never leads back to it (a package's __init__ aside)."""
    graph = module_imports()
    cycles = []
    for start in graph:
        seen, stack = set(), [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    cycles.append(" -> ".join(trail + [nxt]))
                elif nxt not in seen and not nxt.endswith("__init__"):
                    seen.add(nxt)
                    stack.append((nxt, trail + [nxt]))
    assert not cycles, "\n".join(sorted(set(cycles))[:20])
