"""Build a run's dataset, model and loss from a validated recipe."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .batch import Collator
from .data import Dataset, TupleDataset
from .errors import PolyalignError
from .loss import Loss, WeightedLoss
from .model import MultiModalModel
from .plugins import Plugins, default_plugins
from .recipe import Recipe


@dataclass
class Assembled:
    """The parts of a run."""

    dataset: Dataset
    model: MultiModalModel
    loss: Loss

    def tuples(self, split: str, source: str = "") -> TupleDataset:
        """A torch dataset loading ``split`` through the model's encoders."""
        loaders = {m: enc.load for m, enc in self.model.encoders.items()}
        return TupleDataset(self.dataset.split(split), loaders, self.dataset.root, split, source)

    def collator(self) -> Collator:
        """The collate function for this model's modalities."""
        return Collator({m: enc.collate for m, enc in self.model.encoders.items()})

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Model and loss weights in one flat dict (``model.*``, ``loss.*``)."""
        return {**{f"model.{k}": v for k, v in self.model.state_dict().items()},
                **{f"loss.{k}": v for k, v in self.loss.state_dict().items()}}

    def load_state_dict(self, weights: dict[str, torch.Tensor]) -> None:
        """Load weights written by :meth:`state_dict` (strict)."""
        self.model.load_state_dict({k[6:]: v for k, v in weights.items() if k.startswith("model.")})
        self.loss.load_state_dict({k[5:]: v for k, v in weights.items() if k.startswith("loss.")})


def build_loss(recipe: Recipe, plugins: Plugins) -> Loss:
    """The recipe's loss: one plugin, or a weighted sum when ``loss`` is a list."""
    context = {"modalities": list(recipe.modalities), "embed_dim": recipe.model.embed_dim}
    nodes = recipe.losses
    built = {}
    for node in nodes:
        comp = plugins.registry.get("loss", node.plugin)
        key = node.plugin if node.plugin not in built else f"{node.plugin}_{len(built)}"
        built[key] = (comp.create(comp.make_config(node.options()), **context), node.weight)
    if len(built) == 1 and nodes[0].weight == 1.0:
        return next(iter(built.values()))[0]
    return WeightedLoss({k: v[0] for k, v in built.items()}, {k: v[1] for k, v in built.items()})


def assemble(recipe: Recipe, plugins: Plugins | None = None) -> Assembled:
    """Create the dataset, the model (encoders + heads) and the loss for ``recipe``."""
    plugins = plugins or default_plugins()
    torch.manual_seed(recipe.seed)
    data_comp = plugins.registry.get("dataset", recipe.data.plugin)
    dataset = data_comp.create(data_comp.make_config(recipe.data.options()), seed=recipe.seed)
    lacking = [m for m in recipe.modalities if m not in dataset.modalities]
    if lacking:
        raise PolyalignError(
            f"modalities.{lacking[0]}: the dataset ({recipe.data.plugin}) has no modality "
            f"{lacking[0]!r}; it provides: {', '.join(dataset.modalities)}. Rename the modality "
            f"in the recipe or change data.")
    encoders, plugin_names = {}, {}
    train = dataset.split("train")
    for m, node in recipe.modalities.items():
        comp = plugins.registry.get("encoder", node.encoder.plugin)
        example = next((s[m] for s in train if s.get(m) is not None), None)
        encoders[m] = comp.create(comp.make_config(node.encoder.options()), modality=m,
                                  example=example, root=dataset.root)
        plugin_names[m] = node.encoder.plugin
    model = MultiModalModel(encoders, recipe.model.embed_dim, recipe.model.normalize,
                            recipe.missing.strategy, plugin_names)
    return Assembled(dataset, model, build_loss(recipe, plugins))
