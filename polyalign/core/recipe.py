"""Recipes: YAML validated by pydantic, each ``plugin:`` node by its plugin's own model."""

from __future__ import annotations

import difflib
import json
import math
import re
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from polyalign.files.manifest_file import RESERVED_KEYS
from polyalign.files.yaml_file import YamlError, check_tree, parse_yaml, read_yaml

from .device import device_problem
from .errors import PluginError, RecipeError, cut, shown
from .memory import memory_problem
from .plugin_manager import Plugins, default_plugins
from .registry import unknown_name_message


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class PluginNode(BaseModel):
    """``{plugin: NAME, ...options}``; the options are validated by the plugin's config model."""

    model_config = ConfigDict(extra="allow")
    plugin: str

    def options(self) -> dict[str, Any]:
        """The plugin's own options (everything but ``plugin``)."""
        return dict(self.model_extra or {})


class LossNode(PluginNode):
    """A loss plugin node with its weight in a sum of losses."""

    weight: float = Field(1.0, ge=0, allow_inf_nan=False)
    score_with: bool = Field(False, description="in a list of losses, score with this term alone (default: "
                                                "every term, the sum of their scaled scores)")


class ModalityNode(Strict):
    encoder: PluginNode
    unlocked_layers: int | None = Field(None, ge=1, description="train only the encoder's last K layer groups "
                                        "(LiT-style); the earlier ones are locked")
    lr_scale: float = Field(1.0, gt=0, description="multiplies train.lr for this modality's "
                            "encoder (its projection head keeps train.lr)")


class ModelSection(Strict):
    embed_dim: int = Field(64, gt=0)
    normalize: Literal["l2", "layernorm", "none"] = "l2"
    head: Literal["linear", "none", "mlp"] | dict[str, Literal["linear", "none", "mlp"]] = Field(
        "linear", description="what maps each encoder's output to embed_dim: linear, none (the encoder already "
                              "ends in embed_dim: open_clip towers, LiT-style frozen towers) or mlp (linear, GELU, "
                              "linear); one kind for all, or {modality: kind} (unnamed modalities: linear)")

    spaces: Literal["auto", "per_term", "shared"] = Field(
        "auto", description="with a list of losses: per_term = each scoring term its own embedding space (the "
                            "heads map to one embed_dim block per term, each normalised on its own, over shared "
                            "encoders; the score is the sum of the terms' logits); shared = every term on the "
                            "same embedding; auto = per_term when two or more terms score and no head is none")

    def head_of(self, modality: str) -> str:
        """The head kind of ``modality``."""
        return self.head.get(modality, "linear") if isinstance(self.head, dict) else self.head


class MissingSection(Strict):
    strategy: Literal["drop", "learned"] = "drop"
    train_rate: dict[str, float] = Field(default_factory=dict)

    @field_validator("train_rate")
    @classmethod
    def _rates_in_range(cls, rates: dict[str, float]) -> dict[str, float]:
        for m, rate in rates.items():
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"the rate for {m!r} must be in [0, 1), got {rate}")
        return rates


class TrainSection(Strict):
    epochs: int = Field(10, ge=1)
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps")
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float | None = Field(1.0, gt=0)
    accumulate: int = Field(1, ge=1, description="micro-batches of batch_size per optimizer step")
    negatives: Literal["window", "micro"] = Field(
        "window", description="with accumulate > 1: window = the loss spans every micro-batch of the step "
                              "(GradCache: equal to one batch of accumulate x batch_size); micro = each "
                              "micro-batch's own loss")
    layer_decay: float | None = Field(None, gt=0, le=1, description="layer-wise lr decay: an encoder's layer "
                                      "group i of n trains at lr * layer_decay ** (n - i)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto = bf16 autocast on CUDA, fp32 on CPU; fp16 = fp16 autocast with a gradient "
                            "scaler (CUDA only)")
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="with several processes: ddp = a full model copy per process; fsdp = parameters, "
                           "gradients and optimizer state sharded per encoder (FSDP2)")
    device: str = "auto"

    @field_validator("device")
    @classmethod
    def _known_device(cls, name: str) -> str:
        problem = device_problem(name, here=False)
        if problem is not None:
            raise ValueError(problem)
        return name

    num_workers: int | Literal["auto"] = Field(
        "auto", description="DataLoader worker processes per training process; auto = 0 when the data is "
                            "numbers already in memory, else one per CPU of the process less one, at most 8")

    @field_validator("num_workers", mode="before")
    @classmethod
    def _workers(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            return value
        raise ValueError(f"must be auto or a number of worker processes (0 or more), got {value!r}")
    threads: int | Literal["auto"] = Field(
        "auto", description="torch threads of each training process; auto = the CPUs this process may use "
                            "(affinity, cgroup quota) shared among this machine's processes, less one per "
                            "DataLoader worker, at least 1 (recorded in the run's recipe.yaml)")

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError(f"must be auto or a number of threads (1 or more), got {value!r}")
    pin_memory: bool = False
    log_every: int = Field(10, ge=1)
    checkpoint_every: int | None = Field(None, ge=1, description="also checkpoint every N steps, as "
                                         "checkpoints/step-NNNNNNNN (plus last); default: each epoch end only")
    keep_last: int = Field(1, ge=1, description="step-NNNNNNNN checkpoints to keep (the newest)")
    deterministic: bool = True
    gather: Literal["global", "local"] = "global"
    compile: bool = False
    on_nan: Literal["stop", "skip"] = Field("stop", description="on a NaN/Inf loss or gradient: stop, or "
                                            "skip that step (up to max_nan_skips)")
    max_nan_skips: int = Field(10, ge=0, description="skipped steps allowed in a run with on_nan: skip")


class CacheSection(Strict):
    inputs: Literal["none", "memory", "disk"] = Field(
        "none", description="keep what each encoder decoded so later epochs skip decoding: memory (this run) "
                            "or disk (cache.dir, reused by later runs until a file or an encoder option changes)")
    features: bool = Field(False, description="compute the output of every frozen encoder (freeze: true) once "
                                              "per sample, in eval mode, and train only the rest")
    dir: str | None = Field(None, description="folder of the disk caches (default: $POLYALIGN_CACHE, else "
                                              "$XDG_CACHE_HOME/polyalign or ~/.cache/polyalign)")


class Recipe(Strict):
    """A whole training run."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=100)
    description: str = ""
    seed: int = Field(0, ge=0, lt=2**32)
    data: PluginNode
    modalities: dict[str, ModalityNode]
    model: ModelSection = Field(default_factory=ModelSection)
    loss: LossNode | list[LossNode]
    missing: MissingSection = Field(default_factory=MissingSection)
    train: TrainSection = Field(default_factory=TrainSection)
    cache: CacheSection = Field(default_factory=CacheSection)
    eval: list[PluginNode] = Field(default_factory=list)
    logging: list[str | PluginNode] = Field(default_factory=lambda: ["jsonl"])

    @property
    def losses(self) -> list[LossNode]:
        """The loss nodes as a list (one plugin or a weighted sum)."""
        return self.loss if isinstance(self.loss, list) else [self.loss]

    @property
    def loggers(self) -> list[PluginNode]:
        """The ``logging`` entries as plugin nodes (a plain name is a node without options)."""
        return [PluginNode(plugin=e) if isinstance(e, str) else e for e in self.logging]

    def to_yaml(self) -> str:
        """The resolved recipe (every default filled in) as YAML."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _path(loc: tuple | list) -> str:
    return ".".join(cut(str(p), 60) for p in loc)


_LOSS_BRANCHES = ("LossNode", "list[LossNode]")
_LOGGER_BRANCHES = ("str", "PluginNode")


_SECTION_MODELS: dict[tuple, type[BaseModel]] = {
    (): Recipe, ("model",): ModelSection, ("missing",): MissingSection, ("train",): TrainSection,
    ("cache",): CacheSection}


def _unknown_key_hint(err: dict, models: dict[tuple, type[BaseModel]]) -> str:
    """For an unknown key: the closest valid key of the section it is in, or all of them."""
    if err["type"] != "extra_forbidden":
        return ""
    model = models.get(tuple(err["loc"][:-1]))
    if model is None:
        return ""
    fields = list(model.model_fields)
    close = difflib.get_close_matches(str(err["loc"][-1]), fields, n=1)
    return f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(fields)}"


def _pydantic_problems(exc: ValidationError, prefix: tuple = (), raw: Any = None,
                       models: dict[tuple, type[BaseModel]] | None = None) -> list[tuple[str, str]]:
    """(yaml path, message) per pydantic error; for ``loss`` only the errors of the form used
    (one node or a list of nodes) are kept. ``models`` maps a location to the model whose keys
    an unknown key there is compared with."""
    loss = raw.get("loss") if isinstance(raw, dict) else None
    branch = "list[LossNode]" if isinstance(loss, list) else "LossNode" if isinstance(loss, dict) else None
    logging = raw.get("logging") if isinstance(raw, dict) else None
    problems = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        if not prefix and len(loc) > 1 and loc[0] == "loss" and loc[1] in _LOSS_BRANCHES:
            if branch is None:
                problems.append(("loss", "must be a plugin node {plugin: NAME, ...} or a list of them"))
                continue
            if loc[1] != branch:
                continue
        if not prefix and len(loc) > 2 and loc[0] == "logging" and loc[2] in _LOGGER_BRANCHES:
            if not isinstance(logging[loc[1]], dict):
                problems.append((_path(loc[:2]), "a logger is a name (jsonl) or a plugin node "
                                                 "{plugin: NAME, ...options}"))
                continue
            if loc[2] != "PluginNode":
                continue
            loc = loc[:2] + loc[3:]
        loc = tuple(p for p in loc if p not in _LOSS_BRANCHES)
        message = re.sub(r" or instance of \w+|^Value error, ", "", err["msg"]) + _unknown_key_hint(err, models or {})
        problems.append((_path(prefix + loc), message))
    return problems


def parse_overrides(overrides: list[str] | None) -> list[tuple[list[str], Any]]:
    """``["train.lr=0.1", ...]`` -> ``[(["train", "lr"], 0.1), ...]`` (values parsed as YAML)."""
    parsed = []
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError("command line", [(shown(item), "an override must look like key.path=value")])
        try:
            value = parse_yaml(raw, "command line") if raw.strip() else ""
        except YamlError as exc:
            raise RecipeError("command line", [(key, f"value {shown(raw)}: {exc.reason}")]) from None
        parsed.append((key.strip().split("."), value))
    return parsed


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    """Set each ``key.path=value`` in ``raw`` (list items by index), creating mappings as needed."""
    for keys, value in parse_overrides(overrides):
        node: Any = raw
        for depth, key in enumerate(keys):
            last = depth == len(keys) - 1
            if isinstance(node, list):
                if not key.isdigit() or int(key) >= len(node):
                    raise RecipeError("command line", [(".".join(keys), f"{'.'.join(keys[:depth]) or 'recipe'} "
                                                        f"is a list of {len(node)}; {key!r} is not an index in it")])
                key = int(key)
            elif not isinstance(node, dict):
                raise RecipeError("command line", [(".".join(keys), f"{'.'.join(keys[:depth])} is not a mapping")])
            if last:
                node[key] = value
            else:
                if isinstance(node, dict) and not isinstance(node.get(key), (dict, list)):
                    node[key] = {}
                node = node[key]
    return raw


def _plugin_nodes(raw: dict) -> list[tuple[str, tuple, Any]]:
    """(kind, yaml path, node) for every plugin node found in a raw recipe."""
    found: list[tuple[str, tuple, Any]] = []
    if isinstance(raw.get("data"), dict):
        found.append(("dataset", ("data",), raw["data"]))
    if isinstance(raw.get("modalities"), dict):
        for m, node in raw["modalities"].items():
            if isinstance(node, dict) and isinstance(node.get("encoder"), dict):
                found.append(("encoder", ("modalities", m, "encoder"), node["encoder"]))
    loss = raw.get("loss")
    if isinstance(loss, dict):
        found.append(("loss", ("loss",), loss))
    elif isinstance(loss, list):
        found += [("loss", ("loss", i), n) for i, n in enumerate(loss) if isinstance(n, dict)]
    if isinstance(raw.get("eval"), list):
        found += [("evaluator", ("eval", i), n) for i, n in enumerate(raw["eval"]) if isinstance(n, dict)]
    if isinstance(raw.get("logging"), list):
        found += [("logger", ("logging", i), n) for i, n in enumerate(raw["logging"]) if isinstance(n, dict)]
    return found


_NODE_KEYS = {"loss": ("plugin", "weight", "score_with")}


def plugin_names(raw: dict) -> dict[tuple, Any]:
    """The ``plugin`` of every plugin node of a raw recipe, by YAML path."""
    return {loc: node.get("plugin") for _, loc, node in _plugin_nodes(raw)}


def drop_replaced_plugin_options(old_names: dict[tuple, Any], raw: dict, given: list[tuple[str, ...]],
                                 plugins: Plugins) -> list[str]:
    """Where an override changed a node's ``plugin`` from ``old_names`` (``loss.plugin=clip`` on a
    Symile node with ``negatives:``), drop from ``raw`` the options the new plugin does not take,
    unless the command line set them too (``given`` key paths); return a note per node naming them."""
    notes = []
    for kind, loc, node in _plugin_nodes(raw):
        old, new = old_names.get(loc), node.get("plugin")
        at = tuple(str(p) for p in loc)
        if old is None or old == new or at + ("plugin",) not in given or not isinstance(new, str):
            continue
        try:
            config = plugins.registry.get(kind, new).config
        except PluginError:
            continue  # validation names the unknown plugin
        if config.model_config.get("extra") == "allow":
            continue
        reserved = _NODE_KEYS.get(kind, ("plugin",))
        takes = {*reserved, *config.model_fields, *(f.alias for f in config.model_fields.values() if f.alias)}
        kept = [k for k in node if k not in reserved and (k in takes or at + (str(k),) in given)]
        try:  # an option both plugins take may hold a value only the old one accepts (symile's negatives: n_squared)
            config.model_validate({k: node[k] for k in kept})
            refused = set()
        except ValidationError as exc:
            refused = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
        dropped = {k: node.pop(k) for k in list(node) if (k not in takes or str(k) in refused and k not in reserved)
                   and at + (str(k),) not in given}
        if dropped:
            shown_options = ", ".join(f"{k}: {cut(json.dumps(v, default=str), 60)}" for k, v in dropped.items())
            notes.append(f"{_path(loc)}: plugin changed from {old!r} to {new!r}; dropped the option(s) {new!r} "
                         f"does not take, or not with that value ({shown_options})")
    return notes



def validate_recipe(raw: Any, source: str = "recipe", plugins: Plugins | None = None) -> Recipe:
    """Validate a raw recipe mapping; raise :class:`RecipeError` listing every problem."""
    plugins = plugins or default_plugins()
    if not isinstance(raw, dict):
        raise RecipeError(source, [("", f"a recipe must be a YAML mapping, got {type(raw).__name__}")])
    structure = check_tree(raw)
    if structure is not None:
        raise RecipeError(source, [structure])
    problems: list[tuple[str, str]] = []
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        recipe = None
        problems += _pydantic_problems(exc, raw=raw, models=_SECTION_MODELS)
    if isinstance(raw.get("modalities"), dict):
        problems += [(_path(("modalities", m)), problem) for m in raw["modalities"]
                     if (problem := modality_name_problem(m)) is not None]
    if raw.get("loss") == []:
        problems.append(("loss", "an empty list; give at least one loss plugin node {plugin: NAME, ...}"))
    context = plugin_context(recipe) if recipe is not None else None
    resolved: dict[tuple, dict] = {}  # yaml path -> the node with every default filled in
    for kind, loc, node in _plugin_nodes(raw):
        name = node.get("plugin")
        if not isinstance(name, str):
            continue  # reported by the schema above
        try:
            comp = plugins.registry.get(kind, name)
        except PluginError:
            problems.append((_path(loc + ("plugin",)),
                             unknown_name_message(kind, name, plugins.registry.names(kind)) + _failed_note(plugins)))
            continue
        reserved = _NODE_KEYS.get(kind, ("plugin",))
        options = {k: v for k, v in node.items() if k not in reserved}
        try:
            validated = comp.make_config(options, context).model_dump(mode="json")
            resolved[loc] = {**{k: node[k] for k in reserved if k in node}, **validated}
        except ValidationError as exc:
            problems += _pydantic_problems(exc, loc, models={(): comp.config})
        problems += _unknown_options(comp.config, options, loc, kind, name)
        reported = {path for path, _ in problems}
        problems += [p for p in _non_finite(options, loc) if p[0] not in reported]
    if isinstance(raw.get("logging"), list):
        names = plugins.registry.names("logger")
        problems += [(f"logging.{i}", unknown_name_message("logger", n, names))
                     for i, n in enumerate(raw["logging"]) if isinstance(n, str) and n not in names]
    if recipe is not None and not problems:
        problems += _cross_checks(recipe)
    if problems:
        raise RecipeError(source, list(dict.fromkeys(problems)))
    assert recipe is not None
    return _with_resolved_options(recipe, resolved)


def _non_finite(value: Any, loc: tuple) -> list[tuple[str, str]]:
    """A problem for every NaN or infinite number among a plugin node's options (as the recipe's own
    sections refuse them): no option of a plugin means anything at infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return [(_path(loc), f"must be a finite number, got {value}")]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _non_finite(v, loc + (k,))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _non_finite(v, loc + (i,))]
    return []


def plugin_context(recipe: Recipe) -> dict[str, Any]:
    """What a plugin's config model may read from ``info.context`` in its validators to check its
    options against the rest of the recipe: the modality names, ``embed_dim`` and the global ``batch_size``."""
    return {"modalities": list(recipe.modalities), "embed_dim": recipe.model.embed_dim,
            "batch_size": recipe.train.batch_size}


MODALITY_NAME = re.compile(r"^[A-Za-z0-9_]+$")
RESERVED_MODALITY_NAMES = ("all", *RESERVED_KEYS)


def modality_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot name a modality, or None.

    A modality name keys PyTorch module dicts (no dot, not empty, not an attribute of
    ``nn.ModuleDict``/``nn.ParameterDict`` such as ``eval`` or ``type``), a manifest column (not
    ``label`` or ``id``), evaluator options (not ``all``) and metric names (``loss_a-b``: no ``-``).
    """
    if not isinstance(name, str) or not MODALITY_NAME.match(name):
        return (f"{shown(name)} cannot name a modality: use letters, digits and underscores only "
                f"(it names layers, manifest columns and metrics such as loss_a-b)")
    if name in RESERVED_MODALITY_NAMES:
        return (f"{name!r} cannot name a modality: it is reserved ({', '.join(RESERVED_MODALITY_NAMES)} "
                f"mean something else in manifests and evaluator options)")
    from torch import nn

    taken = [cls.__name__ for cls in (nn.ModuleDict, nn.ParameterDict) if hasattr(cls(), name)]
    if taken:
        return (f"{name!r} cannot name a modality: it is an attribute of PyTorch's {taken[0]} "
                f"(modalities key one), so the model could not be built; rename it, e.g. {name}_")
    return None


def _failed_note(plugins: Plugins) -> str:
    """A note naming the plugins that failed to load (one of them may provide the name)."""
    failed = [f"{i.distribution} ({i.name}): {i.error}" for i in plugins.loaded if i.error]
    return f". Note: {len(failed)} plugin(s) failed to load: {'; '.join(failed)}" if failed else ""


def _unknown_options(config: type[BaseModel], options: dict, loc: tuple, kind: str,
                     name: str) -> list[tuple[str, str]]:
    """Options a plugin's config model would silently ignore (models that neither forbid nor
    explicitly allow extra keys): a typo must not pass unnoticed."""
    if config.model_config.get("extra") in ("forbid", "allow"):
        return []
    known = set(config.model_fields) | {f.alias for f in config.model_fields.values() if f.alias}
    return [(_path(loc + (k,)), f"unknown option for {kind} {name!r}; its options are: "
                                f"{', '.join(sorted(config.model_fields)) or '(none)'}")
            for k in options if k not in known]


def _cross_checks(recipe: Recipe) -> list[tuple[str, str]]:
    """Checks that span sections: modality names used by losses, evaluators and `missing`."""
    names = list(recipe.modalities)
    problems = []
    if len(names) < 2:
        problems.append(("modalities", f"contrastive learning needs at least 2 modalities, got {len(names)}"))

    def check(path: str, value: Any) -> None:
        values = value if isinstance(value, list) else [value]
        for v in values:
            if isinstance(v, str) and v not in names and v != "all":
                problems.append((path, f"modality {v!r} is not in modalities ({', '.join(names)})"))

    for i, node in enumerate(recipe.losses):
        prefix = "loss" if not isinstance(recipe.loss, list) else f"loss.{i}"
        for key in ("anchor",):
            if node.options().get(key) is not None:
                check(f"{prefix}.{key}", node.options()[key])
    chosen = [i for i, node in enumerate(recipe.losses) if node.score_with]
    if len(chosen) > 1:
        problems.append(("loss", f"score_with is set on loss nodes {', '.join(map(str, chosen))}; a weighted sum "
                                 f"scores with one term alone, or (no score_with) with every term"))
    for i, node in enumerate(recipe.eval):
        for key in ("target", "targets", "query"):
            if node.options().get(key) is not None:
                check(f"eval.{i}.{key}", node.options()[key])
    for m in recipe.missing.train_rate:
        check(f"missing.train_rate.{m}", m)
    for m in recipe.model.head if isinstance(recipe.model.head, dict) else ():
        check(f"model.head.{m}", m)
    dim, batch = recipe.model.embed_dim, recipe.train.batch_size
    too_big = memory_problem(4.0 * dim * len(names) * (8 + 2 * batch),
                             f"{dim} dimensions x {len(names)} modalities x (8 numbers per dimension for each "
                             f"head's weights, gradients and optimizer state + 2 x {batch} embeddings of a "
                             f"batch and their gradients) x 4 bytes")
    if too_big:
        problems.append(("model.embed_dim", too_big + "; lower model.embed_dim"))
    if recipe.train.precision == "fp16" and recipe.train.strategy == "fsdp":
        problems.append(("train.precision", "fp16 does not combine with train.strategy: fsdp (torch's sharded "
                                            "gradient scaler fails with the fused optimizer); use bf16 with fsdp"))
    return problems


def _with_resolved_options(recipe: Recipe, resolved: dict[tuple, dict]) -> Recipe:
    raw = recipe.model_dump(mode="json")
    for loc, full_node in resolved.items():
        node = raw
        for key in loc:
            node = node[key]
        node.clear()
        node.update(full_node)
    return Recipe.model_validate(raw)


def name_from_file(path: Path) -> str:
    """The ``name`` of a recipe that gives none: its file name without the suffix, each run of
    characters a name may not hold (anything but letters, digits, ``_``, ``.``, ``-``) made one ``-``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).strip("-")[:100] or "recipe"


def load_recipe(path: str | Path, overrides: list[str] | None = None,
                plugins: Plugins | None = None) -> Recipe:
    """Read a YAML recipe, apply ``key.path=value`` overrides and validate it."""
    path = Path(path)
    if not path.is_file():
        problem = "file not found" if not path.exists() else "a folder, not a file" if path.is_dir() else \
            "not a regular file (a device, pipe or socket)"
        raise RecipeError(str(path), [("", f"{problem}; `polyalign recipes` lists the shipped recipes")])
    try:
        raw = read_yaml(path)
    except YamlError as exc:
        raise RecipeError(str(path), [(exc.path, exc.reason)]) from None
    if isinstance(raw, dict):
        raw.setdefault("name", name_from_file(path))
        given = [tuple(keys) for keys, _ in parse_overrides(overrides)]
        for item in overrides or []:  # one at a time: each plugin change is seen against the node it replaced
            names = plugin_names(raw)
            raw = apply_overrides(raw, [item])
            for note in drop_replaced_plugin_options(names, raw, given, plugins or default_plugins()):
                warnings.warn(note, stacklevel=2)
    return validate_recipe(raw, str(path), plugins)
