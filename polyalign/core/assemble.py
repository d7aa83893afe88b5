"""Build a run's dataset, model and loss from a validated recipe."""

from __future__ import annotations

import functools
import itertools
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from pydantic import ValidationError

from .batch import Collator
from .data import Dataset, Loader, Sample, TupleDataset
from .encoder import Encoder
from .errors import PluginError, PolyalignError
from .layer_groups import lock_layers
from .loss import Loss, WeightedLoss
from .modality_check import HEAD, check_modalities_present
from .model import MultiModalModel
from .plugin_manager import Plugins, default_plugins
from .recipe_schema import Recipe
from .stream import is_stream


@dataclass
class Assembled:
    """The parts of a run."""

    dataset: Dataset
    model: MultiModalModel
    loss: Loss
    loss_name: str = ""  # the recipe's loss plugin name(s), for error messages
    _read: dict[str, tuple[list[str], list[Sample]]] = field(default_factory=dict, repr=False)

    def samples(self, split: str) -> Sequence[Sample]:
        """The samples of ``split`` as a sequence; a streamed split is read whole (once), so keep
        the streamed val and test splits to a size that fits in memory."""
        data = self.dataset.split(split)
        if not is_stream(data):
            return data
        if split not in self._read:
            entries = list(data.entries())
            self._read[split] = ([w for w, _ in entries], [s for _, s in entries])
        return self._read[split][1]

    def tuples(self, split: str, source: str = "", loaders: dict[str, Loader] | None = None,
               batch_loaders: dict[str, Callable[[list[Any], Path | None], Any]] | None = None) -> TupleDataset:
        """A torch dataset loading ``split`` through the model's encoders (or through ``loaders``
        and ``batch_loaders``, one per modality, e.g. the input cache's)."""
        encoders = self.model.encoders.items()
        samples = self.samples(split)
        locate: Callable[[int], str] | None = None
        if split in self._read:
            locate = self._read[split][0].__getitem__
        elif hasattr(self.dataset, "locate"):
            locate = functools.partial(self.dataset.locate, split)
        return TupleDataset(samples, loaders or {m: enc.load for m, enc in encoders}, self.dataset.root,
                            split, source, on_error=getattr(self.dataset, "on_error", "raise"), locate=locate,
                            batch_loaders=batch_loaders if loaders else {m: enc.load_batch for m, enc in encoders})

    def collator(self) -> Collator:
        """The collate function for this model's modalities."""
        return Collator({m: enc.collate for m, enc in self.model.encoders.items()})

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Model and loss weights in one flat dict (``model.*``, ``loss.*``)."""
        return {**{f"model.{k}": v for k, v in self.model.state_dict().items()},
                **{f"loss.{k}": v for k, v in self.loss.state_dict().items()}}

    def load_state_dict(self, weights: dict[str, torch.Tensor]) -> None:
        """Load weights written by :meth:`state_dict` (strict; a mismatch is a clear error)."""
        mine = self.state_dict()
        missing = [k for k in mine if k not in weights]
        unexpected = [k for k in weights if k not in mine]
        resized = [f"{k} is {tuple(weights[k].shape)} in the checkpoint but {tuple(v.shape)} here"
                   for k, v in mine.items() if k in weights and tuple(weights[k].shape) != tuple(v.shape)]
        if missing or unexpected or resized:
            parts = ([f"missing: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"] if missing else [])
            parts += ([f"not in this model: {', '.join(unexpected[:5])}{' ...' if len(unexpected) > 5 else ''}"]
                      if unexpected else [])
            parts += resized[:5]
            raise PolyalignError("the checkpoint does not fit the model built from the recipe ("
                                 + "; ".join(parts) + "). Was model.embed_dim, a modality, an encoder option "
                                 "or the loss changed since it was trained? Use the run's own recipe.yaml.")
        self.model.load_state_dict({k[6:]: v for k, v in weights.items() if k.startswith("model.")})
        self.loss.load_state_dict({k[5:]: v for k, v in weights.items() if k.startswith("loss.")})


def build_loss(recipe: Recipe, plugins: Plugins) -> Loss:
    """The recipe's loss: one plugin, or a weighted sum when ``loss`` is a list."""
    context = recipe.plugin_context()
    nodes = recipe.losses
    built = {}
    for i, node in enumerate(nodes):
        comp = plugins.registry.get("loss", node.plugin)
        key = node.plugin if node.plugin not in built else f"{node.plugin}_{len(built)}"
        with _plugin_context("loss" if len(nodes) == 1 else f"loss.{i}", node.plugin):
            built[key] = (comp.create(comp.make_config(node.options(), context), **context), node.weight)
    if len(built) == 1 and nodes[0].weight == 1.0:
        return next(iter(built.values()))[0]
    score_with = next((key for key, node in zip(built, nodes) if node.score_with), None)
    terms = {k: v[0] for k, v in built.items()}
    spaces = term_spaces(recipe, terms)
    if recipe.model.balance == "gradients" and not spaces:
        raise PolyalignError("model.balance: gradients balances terms that train spaces of their own, and "
                             "model.spaces: auto gave this list one shared space (a head is none, or fewer than "
                             "two terms score); leave model.balance: auto")
    return WeightedLoss(terms, {k: v[1] for k, v in built.items()}, score_with, spaces,
                        balance=bool(spaces) and recipe.model.balance != "none")


def term_spaces(recipe: Recipe, terms: dict[str, Loss]) -> dict[str, int]:
    """``{term: block}`` for a list of losses with one embedding space per scoring term
    (``model.spaces``), or ``{}`` for one shared space. ``auto`` gives each term its own space when
    two or more terms score (regularisers such as ``align_uniform`` get none: they shape every block)
    and no head is ``none`` (an encoder that already ends in ``embed_dim`` has one space)."""
    scoring = [k for k, t in terms.items() if getattr(t, "scores_in_a_sum", True)]
    mode = recipe.model.spaces
    if mode == "auto":
        heads_split = all(recipe.model.head_of(m) != "none" for m in recipe.modalities)
        mode = "per_term" if len(scoring) >= 2 and heads_split else "shared"
    if mode == "shared" or len(scoring) < 2:
        return {}
    return {k: i for i, k in enumerate(scoring)}


def model_spaces(recipe: Recipe, plugins: Plugins) -> int:
    """How many embedding spaces the recipe's loss asks of the model (1 unless ``model.spaces``
    gives the terms of a list of losses one each)."""
    if len(recipe.losses) < 2:
        return 1
    loss = build_loss(recipe, plugins)
    return loss.n_spaces if isinstance(loss, WeightedLoss) else 1


def assemble(recipe: Recipe, plugins: Plugins | None = None) -> Assembled:
    """Create the dataset, the model (encoders + heads) and the loss for ``recipe``."""
    plugins = plugins or default_plugins()
    torch.manual_seed(recipe.seed)
    data_comp = plugins.registry.get("dataset", recipe.data.plugin)
    with _plugin_context("data", recipe.data.plugin):
        dataset = data_comp.create(data_comp.make_config(recipe.data.options()), seed=recipe.seed)
    lacking = [m for m in recipe.modalities if m not in dataset.modalities]
    if lacking:
        raise PolyalignError(
            f"modalities.{lacking[0]}: the dataset ({recipe.data.plugin}) has no modality "
            f"{lacking[0]!r}; it provides: {', '.join(dataset.modalities)}. Rename the modality "
            f"in the recipe or change data.")
    split = dataset.split("train")
    head = list(itertools.islice(split, HEAD))
    check_modalities_present(list(recipe.modalities), "train", split, head, recipe.data.plugin)
    train = head if is_stream(split) else split
    examples = {m: next((s[m] for s in train if s.get(m) is not None), None) for m in recipe.modalities}
    model = build_model(recipe, plugins, examples, dataset.root)
    fit_encoders(recipe, model, train, dataset.root)
    check_encoders_load(recipe, model, train, dataset.root)
    loss = build_loss(recipe, plugins)
    return Assembled(dataset, model, loss, "+".join(n.plugin for n in recipe.losses))


@contextmanager
def _plugin_context(where: str, plugin: str) -> Iterator[None]:
    """Prefix errors a plugin raises while it is built with the recipe path of its node."""
    try:
        yield
    except PolyalignError as exc:
        raise type(exc)(f"{where} ({plugin}): {exc}") if type(exc) in (PolyalignError, PluginError) else exc
    except Exception as exc:
        raise PluginError(f"{where}: plugin {plugin!r} failed to build: {type(exc).__name__}: {exc}") from exc


def fit_encoders(recipe: Recipe, model: MultiModalModel, train: Any, root: Path | None) -> None:
    """Let each encoder that takes statistics from the train split (:meth:`Encoder.fit`) see its
    modality's values; errors name the recipe path."""
    for m, node in recipe.modalities.items():
        encoder = model.encoders[m]
        if type(encoder).fit is Encoder.fit:
            continue
        with _plugin_context(f"modalities.{m}.encoder", node.encoder.plugin):
            encoder.fit((s[m] for s in train if s.get(m) is not None), root)


def check_encoders_load(recipe: Recipe, model: MultiModalModel, train: Any, root: Path | None,
                        tries: int = 5) -> None:
    """Load the first train values of each modality with its encoder: a recipe that does not
    fit its data (a vector ``dim`` the data does not have...) fails now, naming the recipe path,
    not rows later. One unreadable file among ``tries`` values is left to the data loader."""
    for m, node in recipe.modalities.items():
        errors = []
        for value in itertools.islice((s[m] for s in train if s.get(m) is not None), tries):
            try:
                model.encoders[m].load(value, root)
                break
            except Exception as exc:  # noqa: BLE001 - reported below with the recipe path
                errors.append(f"{type(exc).__name__}: {exc}" if not isinstance(exc, PolyalignError) else str(exc))
        else:
            if errors:
                raise PolyalignError(
                    f"modalities.{m}.encoder ({node.encoder.plugin}): none of the first {len(errors)} "
                    f"train value(s) of {m!r} can be loaded with these options: {errors[0]}. Check the "
                    f"encoder options against the data.")


def build_model(recipe: Recipe, plugins: Plugins, examples: dict[str, Any] | None = None,
                root: Path | None = None) -> MultiModalModel:
    """The recipe's encoders and heads; ``examples`` (one raw value per modality) let encoders
    infer options the recipe leaves open."""
    encoders, plugin_names = {}, {}
    for m, node in recipe.modalities.items():
        comp = plugins.registry.get("encoder", node.encoder.plugin)
        with _plugin_context(f"modalities.{m}.encoder", node.encoder.plugin):
            encoders[m] = comp.create(comp.make_config(node.encoder.options()), modality=m,
                                      example=(examples or {}).get(m), root=root)
        if node.unlocked_layers is not None:
            lock_layers(encoders[m], node.unlocked_layers, f"modalities.{m}")
        plugin_names[m] = node.encoder.plugin
    heads = {m: recipe.model.head_of(m) for m in recipe.modalities}
    return MultiModalModel(encoders, recipe.model.embed_dim, recipe.model.normalize,
                           recipe.missing.strategy, plugin_names, heads, model_spaces(recipe, plugins))


def with_rebuild_options(recipe: Recipe, model: MultiModalModel, plugins: Plugins,
                         changed: dict[str, dict[str, Any]] | None = None) -> Recipe:
    """``recipe`` with each encoder's inferred options (:meth:`Encoder.rebuild_options`), and the
    options in ``changed[modality]``, written into its ``modalities.<m>.encoder`` node, so the
    model can be rebuilt without the data."""
    raw = recipe.model_dump(mode="json")
    for m, encoder in model.encoders.items():
        node = raw["modalities"][m]["encoder"]
        comp = plugins.registry.get("encoder", node["plugin"])
        options = {**{k: v for k, v in node.items() if k != "plugin"}, **encoder.rebuild_options(),
                   **(changed or {}).get(m, {})}
        try:  # validated, and made plain YAML values, by the encoder's own config model
            resolved = comp.make_config(options).model_dump(mode="json")
        except ValidationError as exc:
            raise PluginError(f"modalities.{m}.encoder ({node['plugin']}): rebuild_options() returned "
                              f"options its config rejects: {exc}") from None
        raw["modalities"][m]["encoder"] = {"plugin": node["plugin"], **resolved}
    return Recipe.model_validate(raw)
