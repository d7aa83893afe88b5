"""The recipe's schema: its sections as pydantic models, a ``plugin:`` node, and the context plugins see."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from polyalign.files.manifest_file import RESERVED_KEYS

from .device import device_problem
from .errors import shown

MAX_PROCESSES = 1024  # threads or loader workers of one training process: more is a typo, not a machine


def auto_or_count(value: Any, low: int, what: str) -> Any:
    """``auto``, or a whole number in [low, MAX_PROCESSES] (a train.threads or train.num_workers value)."""
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and low <= value <= MAX_PROCESSES):
        return value
    raise ValueError(f"must be auto or {what} ({low} to {MAX_PROCESSES}), got {value!r}")



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
    balance: Literal["auto", "gradients", "none"] = Field(
        "auto", description="with a space per term: gradients = every term sends the same gradient norm to "
                            "each modality's shared encoder (smoothed over steps), so that no term's pull "
                            "drowns another's; none = each term's gradient as its loss gives it; auto = "
                            "gradients when the terms have spaces of their own, else none")

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

    _workers = field_validator("num_workers", mode="before")(
        lambda value: auto_or_count(value, 0, "a number of worker processes"))
    threads: int | Literal["auto"] = Field(
        "auto", description="torch threads of each training process; auto = the CPUs this process may use "
                            "(affinity, cgroup quota) shared among this machine's processes, less one per "
                            "DataLoader worker, at least 1 (recorded in the run's recipe.yaml)")

    _threads = field_validator("threads", mode="before")(lambda value: auto_or_count(value, 1, "a number of threads"))
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

    @property
    def loss_rows(self) -> int:
        """Rows one loss call contrasts: the batch, or with ``accumulate: K`` and ``negatives: window``
        the K micro-batches of the step together."""
        return self.batch_size * (self.accumulate if self.negatives == "window" else 1)


class CacheSection(Strict):
    inputs: Literal["none", "memory", "disk"] = Field(
        "none", description="keep what each encoder decoded so later epochs skip decoding: memory (this run) "
                            "or disk (cache.dir, reused by later runs until a file or an encoder option changes)")
    features: bool = Field(False, description="compute the output of every frozen encoder (freeze: true) once "
                                              "per sample, in eval mode, and train only the rest")
    dir: str | None = Field(None, description="folder of the disk caches (default: $POLYALIGN_CACHE, else "
                                              "$XDG_CACHE_HOME/polyalign or ~/.cache/polyalign)")


LOSS_FORM = "must be a plugin node {plugin: NAME, ...} or a list of them"
LOGGER_FORM = "a logger is a name (jsonl) or a plugin node {plugin: NAME, ...options}"
FORM_TAGS = {"loss": 1, "logging": 2}
"""Where the tag of a union's branch (``node``, ``list``, ``name``) sits in an error's location, by section."""


def _form(value: Any, plain: type, node: tuple[type, ...]) -> str | None:
    """The tag of the branch ``value`` takes: the plain form, a node, or None (neither: one error)."""
    if isinstance(value, plain):
        return "list" if plain is list else "name"
    return "node" if isinstance(value, node) else None


class Recipe(Strict):
    """A whole training run."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=100)
    description: str = ""
    seed: int = Field(0, ge=0, lt=2**32)
    data: PluginNode
    modalities: dict[str, ModalityNode]
    model: ModelSection = Field(default_factory=ModelSection)
    loss: Annotated[Union[Annotated[LossNode, Tag("node")], Annotated[list[LossNode], Tag("list")]],
                    Discriminator(lambda v: _form(v, list, (dict, LossNode)), custom_error_type="loss_form",
                                  custom_error_message=LOSS_FORM)]
    missing: MissingSection = Field(default_factory=MissingSection)
    train: TrainSection = Field(default_factory=TrainSection)
    cache: CacheSection = Field(default_factory=CacheSection)
    eval: list[PluginNode] = Field(default_factory=list)
    logging: list[Annotated[Union[Annotated[str, Tag("name")], Annotated[PluginNode, Tag("node")]],
                            Discriminator(lambda v: _form(v, str, (dict, PluginNode)),
                                          custom_error_type="logger_form", custom_error_message=LOGGER_FORM)]] = \
        Field(default_factory=lambda: ["jsonl"])

    @property
    def losses(self) -> list[LossNode]:
        """The loss nodes as a list (one plugin or a weighted sum)."""
        return self.loss if isinstance(self.loss, list) else [self.loss]

    @property
    def loggers(self) -> list[PluginNode]:
        """The ``logging`` entries as plugin nodes (a plain name is a node without options)."""
        return [PluginNode(plugin=e) if isinstance(e, str) else e for e in self.logging]

    def plugin_context(self) -> dict[str, Any]:
        """What plugins see of the rest of the recipe: their config validators as ``info.context``, loss
        factories as context arguments. ``batch_size`` is the rows one loss call contrasts."""
        return {"modalities": list(self.modalities), "embed_dim": self.model.embed_dim,
                "batch_size": self.train.loss_rows}

    def to_yaml(self) -> str:
        """The resolved recipe (every default filled in) as YAML."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)



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


SECTION_MODELS: dict[tuple, type[BaseModel]] = {
    (): Recipe, ("model",): ModelSection, ("missing",): MissingSection, ("train",): TrainSection,
    ("cache",): CacheSection}
"""The model of each section, by location: an unknown key there is compared with its fields."""
