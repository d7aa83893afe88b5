"""What a sweep runs: the grid of ``key=value`` overrides times seeds, and its manifest ``sweep.json``."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, field_validator

from polyalign.core.errors import PolyalignError, shown
from polyalign.core.validation_errors import pydantic_problems
from polyalign.files.atomic import atomic_write_text
from polyalign.files.json_file import JsonError, read_json
from polyalign.files.run_files import RECIPE_FILE

try:
    import fcntl
except ImportError:  # Windows: the plan is not locked there
    fcntl = None  # type: ignore[assignment]

MANIFEST = "sweep.json"
PLAN_LOCK = ".sweep.json.lock"
RUNS_DIR = "runs"
STATUS_FILE = "status.json"
OUTPUT_FILE = "output.log"
VERSION = 1


class RunSpec(BaseModel):
    """One run of a sweep: its configuration (the grid's overrides) and seed; ``id`` names its slot folder."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=r"^[A-Za-z0-9_.=,+-]{1,100}/seed-[0-9]{1,10}$",
                    description="its slot folder under runs/, CONFIG/seed-N (never outside the sweep)")
    config: str
    overrides: list[str]
    seed: int = Field(ge=0, lt=2**32)

    @field_validator("id")
    @classmethod
    def _inside_the_sweep(cls, value: str) -> str:
        if value.split("/")[0] in (".", ".."):
            raise ValueError(f"{value!r} would put the run's folder outside runs/")
        return value


class SweepPlan(BaseModel):
    """A sweep: the recipe, the overrides every run shares, the grid, the seeds and the runs (``sweep.json``)."""

    model_config = ConfigDict(extra="forbid")
    version: Literal[1] = VERSION
    recipe: str
    recipe_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    overrides: list[str]
    grid: dict[str, list[str]]
    seeds: list[Annotated[int, Field(ge=0, lt=2**32)]]
    cwd: str
    runs: list[RunSpec] = Field(default_factory=list)
    search: dict[str, Any] | None = None
    jobs: int = Field(1, ge=1, description="runs at once in the latest call (for the estimate of the time left)")

    def run(self, run_id: str) -> RunSpec:
        """The run called ``run_id``."""
        for r in self.runs:
            if r.id == run_id:
                return r
        raise PolyalignError(f"the sweep has no run {run_id!r}")

    def all_overrides(self, spec: RunSpec) -> list[str]:
        """Every override of a run: the shared ones, its configuration's, its seed."""
        return [*self.overrides, *spec.overrides, f"seed={spec.seed}"]


def split_values(text: str) -> list[str]:
    """``V1,V2,...`` split at the commas outside brackets, braces and quotes (``[a, b],c`` is two values)."""
    values, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            values.append(text[start:i].strip())
            start = i + 1
    values.append(text[start:].strip())
    return values


def parse_grid(items: list[str] | None) -> dict[str, list[str]]:
    """``["loss.plugin=symile,clip", "train.lr=0.01,0.1"]`` -> ``{"loss.plugin": ["symile", "clip"], ...}``."""
    grid: dict[str, list[str]] = {}
    for item in items or []:
        key, sep, rest = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise PolyalignError(f"--grid {shown(item)}: give KEY=V1,V2,... (e.g. --grid loss.plugin=symile,clip)")
        if key == "seed":
            raise PolyalignError("--grid seed=...: seeds are set with --seeds N (seeds S, S+1, ... from the "
                                 "recipe's seed S)")
        if key in grid:
            raise PolyalignError(f"--grid {key} is given twice; give all its values in one --grid {key}=V1,V2")
        values = split_values(rest)
        if any(v == "" for v in values) or len(set(values)) != len(values):
            raise PolyalignError(f"--grid {shown(item)}: the values must be distinct and not empty")
        grid[key] = values
    return grid


def config_name(overrides: list[str]) -> str:
    """A configuration's folder name: its overrides joined by ',' (``base`` for none); characters a
    file name should not hold become '_', and a long name ends with a hash to stay unique."""
    if not overrides:
        return "base"
    text = ",".join(overrides)
    name = re.sub(r"[^A-Za-z0-9_.=,+-]", "_", text)
    if len(name) > 100 or name != text:
        name = name[:80] + "-" + hashlib.sha256(text.encode()).hexdigest()[:10]
    return name


MAX_RUNS = 10_000  # a larger sweep is refused before it is expanded (its plan alone would take minutes)


def check_size(grid: dict[str, list[str]], seeds: int) -> None:
    """Refuse a grid x seeds of more than :data:`MAX_RUNS` runs, saying how it multiplies out."""
    total = math.prod(len(v) for v in grid.values()) * seeds
    if total > MAX_RUNS:
        sizes = " x ".join([f"{len(v)} values of {k}" for k, v in grid.items()] + [f"{seeds:,} seed(s)"])
        raise PolyalignError(f"the sweep would hold {total:,} runs ({sizes}); at most {MAX_RUNS:,} fit one sweep: "
                             f"split it into several, or search the space with --search optuna --trials N")


def grid_runs(grid: dict[str, list[str]], seeds: list[int]) -> list[RunSpec]:
    """The runs of a grid: every combination of values (first key slowest) times every seed."""
    check_size(grid, len(seeds))
    runs = []
    for combo in itertools.product(*grid.values()):
        overrides = [f"{k}={v}" for k, v in zip(grid, combo)]
        config = config_name(overrides)
        runs += [RunSpec(id=f"{config}/seed-{s}", config=config, overrides=overrides, seed=s) for s in seeds]
    return runs


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes (to notice a recipe edited between two calls of one sweep)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def new_plan(recipe: Path, overrides: list[str], grid: dict[str, list[str]], seeds: list[int],
             search: dict[str, Any] | None = None) -> SweepPlan:
    """A plan for ``recipe`` (its absolute path recorded, and the folder the command ran in)."""
    recipe = Path(recipe).resolve()
    plan = SweepPlan(recipe=str(recipe), recipe_sha256=file_sha256(recipe), overrides=list(overrides), grid=grid,
                     seeds=seeds, cwd=os.getcwd(), search=search)
    if search is None:
        plan.runs = grid_runs(grid, seeds)
    return plan


def slot_dir(sweep_dir: Path, spec: RunSpec) -> Path:
    """The folder of one run of the sweep (its run directory and status inside)."""
    return Path(sweep_dir) / RUNS_DIR / spec.id


def read_plan(sweep_dir: Path) -> SweepPlan:
    """The plan recorded in ``sweep_dir/sweep.json``."""
    path = Path(sweep_dir) / MANIFEST
    if not path.is_file():
        raise PolyalignError(f"{sweep_dir} is not a sweep directory (no {MANIFEST}); `polyalign sweep RECIPE "
                             f"--grid KEY=V1,V2 --seeds N --out {sweep_dir}` makes one")
    try:
        return SweepPlan.model_validate(read_json(path, "sweep manifest"))
    except JsonError as exc:
        raise PolyalignError(f"{path} is not a sweep manifest polyalign wrote ({exc})") from None
    except ValidationError as exc:
        problems = "; ".join(f"{where or '<root>'}: {message}" for where, message in pydantic_problems(exc)[:5])
        raise PolyalignError(f"{path} is not a sweep manifest polyalign wrote ({problems}). `polyalign sweep` "
                             f"writes it: restore it, or start the sweep again with another --out") from None


def write_plan(sweep_dir: Path, plan: SweepPlan) -> None:
    """Write ``sweep.json`` (atomically)."""
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(sweep_dir) / MANIFEST, json.dumps(plan.model_dump(mode="json"), indent=2) + "\n")


@contextlib.contextmanager
def plan_lock(sweep_dir: Path) -> Iterator[None]:
    """Hold the lock on ``sweep_dir``'s plan for the block (waiting for another sweep that holds it), so that
    two sweeps on one folder read and write ``sweep.json`` one after the other. The kernel drops the lock
    with its process, however it ends."""
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield
        return
    fd = os.open(Path(sweep_dir) / PLAN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def merge_plan(sweep_dir: Path, plan: SweepPlan) -> SweepPlan:
    """``plan`` recorded in ``sweep_dir``: a new sweep, or the same sweep called again (its runs and any
    new grid values or seeds), under the plan's lock: a second sweep on the folder at the same time adds
    its runs to the plan, never overwrites it. Refuses a folder that holds a sweep of another recipe or
    overrides."""
    with plan_lock(sweep_dir):
        if not (Path(sweep_dir) / MANIFEST).is_file():
            write_plan(sweep_dir, plan)
            return plan
        old = read_plan(sweep_dir)
        if (old.recipe, old.recipe_sha256, old.overrides) != (plan.recipe, plan.recipe_sha256, plan.overrides):
            what = ("the recipe file changed since" if old.recipe == plan.recipe and old.overrides == plan.overrides
                    else f"it holds a sweep of {old.recipe} {' '.join(old.overrides)}".rstrip())
            raise PolyalignError(f"{sweep_dir}: {what}; the runs there would not be runs of this command. Give "
                                 f"another --out for a new sweep")
        if (old.search is None) != (plan.search is None):
            raise PolyalignError(f"{sweep_dir} holds a {'grid' if old.search is None else 'search'}; give another "
                                 f"--out for a {'search' if plan.search else 'grid'}")
        known = {r.id for r in old.runs}
        old.runs += [r for r in plan.runs if r.id not in known]
        for k, values in plan.grid.items():
            old.grid[k] = list(dict.fromkeys([*old.grid.get(k, []), *values]))
        old.seeds = sorted({*old.seeds, *plan.seeds})
        old.search, old.jobs = plan.search, plan.jobs
        write_plan(sweep_dir, old)
        return old


def is_sweep_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a sweep (its ``sweep.json``)."""
    return (Path(path) / MANIFEST).is_file()


def find_run_dir(slot: Path) -> Path | None:
    """The run directory inside a slot (the one with a ``recipe.yaml``), or None if none was made yet."""
    if not Path(slot).is_dir():
        return None
    runs = [d for d in sorted(Path(slot).iterdir()) if d.is_dir() and (d / RECIPE_FILE).is_file()]
    if len(runs) > 1:
        raise PolyalignError(f"{slot} holds {len(runs)} run directories ({', '.join(r.name for r in runs)}); a "
                             f"sweep slot holds one. Move the extra ones out and run the sweep again")
    return runs[0] if runs else None


def sweep_groups(sweep_dir: str | Path) -> dict[str, list[Path]]:
    """The run directories of a sweep by configuration, named by its grid overrides (``loss.plugin=clip``;
    its folder under ``runs/`` may be shortened), in the manifest's order; runs never started are left out."""
    plan = read_plan(Path(sweep_dir))
    if plan.search is not None:  # a search: each trial its own configuration
        return {slot.name: [run] for slot in sorted((Path(sweep_dir) / RUNS_DIR).glob("trial-*"))
                if (run := find_run_dir(slot)) is not None}
    groups: dict[str, list[Path]] = {}
    for spec in plan.runs:
        label = ", ".join(spec.overrides) or "base"
        run_dir = find_run_dir(slot_dir(Path(sweep_dir), spec))
        groups.setdefault(label, [])
        if run_dir is not None:
            groups[label].append(run_dir)
    return groups


@dataclass
class SweepFile:
    """A sweep written down: ``recipe:`` (relative to the file) and a ``sweep:`` block of ``grid``,
    ``seeds`` and ``overrides``."""

    recipe: Path
    grid: list[str]
    seeds: int | None
    overrides: list[str]


class SweepBlock(BaseModel):
    """The ``sweep:`` block of a sweep file."""

    model_config = ConfigDict(extra="forbid")
    grid: dict[str, Annotated[list[Any], Field(min_length=1)]] | None = Field(
        None, description="each key.path its list of values, e.g. {loss.plugin: [symile, clip]}")
    seeds: StrictInt | None = Field(None, ge=1, description="runs per configuration (seeds S, S+1, ...)")
    overrides: list[StrictStr] | None = Field(None, description="key.path=value texts every run shares")


class SweepFileSchema(BaseModel):
    """A sweep file as written: ``recipe:`` and ``sweep:`` (other keys are left to the reader)."""

    recipe: StrictStr
    sweep: SweepBlock


def _yaml_text(value: Any) -> str:
    """A grid value as the override text that parses back to it."""
    import yaml

    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def read_sweep_file(path: Path) -> SweepFile | None:
    """The sweep in ``path`` if it is a sweep file (a mapping with a ``sweep:`` block), else None (a recipe)."""
    from polyalign.files.yaml_file import YamlError, read_yaml

    try:
        raw = read_yaml(path)
    except YamlError:
        return None  # not YAML a sweep file could be: loading it as a recipe says what is wrong
    if not isinstance(raw, dict) or "sweep" not in raw:
        return None
    try:
        written = SweepFileSchema.model_validate(raw)
    except ValidationError as exc:
        problems = pydantic_problems(exc, models={("sweep",): SweepBlock})
        raise PolyalignError(f"{path}: {'; '.join(f'{where}: {message}' for where, message in problems[:5])}. A "
                             f"sweep file has `recipe: FILE` (relative to it) and a `sweep:` mapping of grid "
                             f"({{loss.plugin: [symile, clip]}}), seeds and overrides") from None
    block = written.sweep
    items = [f"{k}=" + ",".join(_yaml_text(v) for v in values) for k, values in (block.grid or {}).items()]
    return SweepFile((path.parent / written.recipe).resolve(), items, block.seeds, block.overrides or [])
