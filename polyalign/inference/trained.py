"""A trained model, loaded from a run or an export: embed raw values, score and search."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from pydantic import ValidationError

from polyalign.core.assemble import Assembled, assemble, build_loss, build_model
from polyalign.core.data import describe_value
from polyalign.core.device import pick_device
from polyalign.core.errors import PluginError, PolyalignError, RecipeError, cut, shown
from polyalign.core.loss import score_candidates
from polyalign.core.plugin_manager import Plugins, default_plugins
from polyalign.core.recipe import Recipe
from polyalign.files.run_files import RECIPE_FILE
from polyalign.files.weights import WEIGHTS, CheckpointError, load_weights, resolve_checkpoint, run_checkpoint
from polyalign.files.yaml_file import YamlError, read_yaml

from .model_card import CARD_FILE, check_card


@dataclass(frozen=True)
class Hit:
    """One ranked candidate of a search: its position in the candidate list, its id and score; and
    the ids of the other candidates holding the same value, shown once as this hit (see
    :func:`polyalign.inference.search.distinct_hits`)."""

    rank: int
    index: int
    id: Any
    score: float
    same: tuple[Any, ...] = ()


def read_recipe_file(path: Path) -> Recipe:
    """A resolved ``recipe.yaml`` (schema only: the data and evaluator plugins need not be installed)."""
    try:
        raw = read_yaml(path)
    except YamlError as exc:
        raise RecipeError(str(path), [(exc.path, exc.reason)]) from None
    if (isinstance(raw, dict) and isinstance(raw.get("model"), dict) and "spaces" not in raw["model"]
            and isinstance(raw.get("loss"), list) and len(raw["loss"]) > 1):
        raw["model"]["spaces"] = "shared"  # written before model.spaces: its list of losses shared one space
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        problems = [(".".join(cut(str(p), 60) for p in e["loc"]), e["msg"]) for e in exc.errors()]
        raise RecipeError(str(path), problems) from None


def values_list(modality: str, values: Any) -> list[Any]:
    """The raw values given for ``modality`` as a list (rows of an array or tensor count as values)."""
    if isinstance(values, (str, Path, dict)):
        raise PolyalignError(f"modality {modality!r}: expected a list of values, got a single "
                             f"{type(values).__name__} ({describe_value(values)}); wrap it in a list")
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray):
        if values.ndim == 0:
            raise PolyalignError(f"modality {modality!r}: expected a list of values, got a scalar")
        return list(values)
    try:
        return list(values)
    except TypeError:
        raise PolyalignError(f"modality {modality!r}: expected a list of values, got "
                             f"{type(values).__name__}") from None


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read a block at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def rank_hits(scores: torch.Tensor, top_k: int, ids: Sequence[Any] | None = None) -> list[list[Hit]]:
    """The ``top_k`` best candidates of each query row of ``scores`` (Q, C); ties keep list order."""
    if top_k < 1:
        raise PolyalignError(f"top_k must be at least 1, got {top_k}")
    n = scores.shape[1]
    if ids is not None and len(ids) != n:
        raise PolyalignError(f"{len(ids)} ids for {n} candidates; give one id per candidate")
    scores = scores.detach().float().cpu()
    k = min(top_k, n)
    hits = []
    for row in scores:
        if k < n and not bool(row.isnan().any()):  # sort only the rows that can make the top k
            keep = (row >= torch.topk(row, k).values[-1]).nonzero(as_tuple=True)[0]
        else:
            keep = torch.arange(n)
        order = torch.sort(row[keep], descending=True, stable=True)  # keep is ascending: ties stay in order
        hits.append([Hit(r + 1, i, ids[i] if ids is not None else i, v) for r, (v, i) in
                     enumerate(zip(order.values[:k].tolist(), keep[order.indices[:k]].tolist()))])
    return hits


def refuse_nonfinite(what: str, embeddings: torch.Tensor) -> None:
    """Refuse rows of ``embeddings`` holding NaN or infinity: such rows cannot be ranked."""
    bad = (~torch.isfinite(embeddings).all(dim=-1)).nonzero().flatten().tolist() if embeddings.dim() == 2 else []
    if bad:
        raise PolyalignError(f"{what}: NaN or infinite embeddings at row(s) "
                             f"{', '.join(map(str, bad[:5]))}{' ...' if len(bad) > 5 else ''} (a NaN or "
                             f"infinity in the values?); such rows cannot be ranked")


class TrainedModel:
    """The model and loss of a run, in eval mode on one device, for use after training.

    ``embed`` turns raw values (paths, strings, numbers, loaded through each modality's encoder)
    into embeddings; ``score`` and ``search`` rank candidates of one modality from queries of
    others with the run's own loss scoring rule (the one its evaluators used).
    """

    def __init__(self, parts: Assembled, recipe: Recipe, device: torch.device, source: Path,
                 checkpoint: str, weights_file: Path):
        self.parts, self.recipe, self.device = parts, recipe, device
        self.source, self.checkpoint, self.weights_file = source, checkpoint, weights_file
        self.model = parts.model.to(device).eval()
        self.loss = parts.loss.to(device).eval()
        self.batch_size = recipe.train.batch_size
        self._sha256: str | None = None

    def __repr__(self) -> str:
        return (f"TrainedModel({self.recipe.name!r}, modalities={self.modalities}, "
                f"embed_dim={self.embed_dim}, loss={type(self.loss).__name__}, device={self.device})")

    @property
    def modalities(self) -> list[str]:
        """Modality names in recipe order."""
        return self.model.modalities

    @property
    def embed_dim(self) -> int:
        """Size of every embedding."""
        return self.model.embed_dim

    @property
    def weights_sha256(self) -> str:
        """SHA-256 of the weights file: identifies the model that made an embeddings file."""
        if self._sha256 is None:
            self._sha256 = file_sha256(self.weights_file)
        return self._sha256

    def check_modality(self, modality: str) -> None:
        """Raise a clear error unless ``modality`` is one of the model's."""
        if modality not in self.model.encoders:
            raise PolyalignError(f"{shown(modality)} is not a modality of this model; it has: "
                                 f"{', '.join(self.modalities)}")

    def embed(self, values: dict[str, Any], root: str | Path | None = None,
              batch_size: int | None = None) -> dict[str, torch.Tensor]:
        """``{modality: [raw values]}`` -> ``{modality: (N, embed_dim)}`` on the model's device.

        A file is a :class:`~pathlib.Path` (relative ones resolve against ``root``, default: the
        current directory) and a ``str`` is text, never a path. Values are loaded and embedded
        ``batch_size`` at a time (default: the recipe's batch size).
        """
        root = Path(root) if root is not None else Path.cwd()
        out: dict[str, torch.Tensor] = {}
        for m, given in values.items():
            self.check_modality(m)
            out[m] = self.model.embed_values(m, values_list(m, given), root, self.device,
                                             batch_size or self.batch_size).float()
        return out

    def query_tuple(self, queries: dict[str, torch.Tensor], target: str | Sequence[str]) -> dict[str, torch.Tensor]:
        """Embedded query tuples as the loss scores them against candidates of ``target`` (one
        modality or several): checked, on the model's device, with a learned placeholder for each
        other absent modality when the model was trained with them."""
        targets = [target] if isinstance(target, str) else list(target)
        for m in targets:
            self.check_modality(m)
        if not queries:
            raise PolyalignError("no query modality given; give at least one, e.g. {'a': [...]}")
        for m in queries:
            self.check_modality(m)
        both = [m for m in targets if m in queries]
        if both:
            raise PolyalignError(f"{both[0]!r} is both a query modality and a candidates' modality; "
                                 f"query with the other modalities")
        sizes = {m: int(z.shape[0]) for m, z in queries.items()}
        if len(set(sizes.values())) != 1:
            raise PolyalignError(f"every query modality needs one value per query; got {sizes}")
        for m, z in queries.items():
            refuse_nonfinite(f"query modality {m!r}", z)
        return self.model.with_placeholders({m: z.to(self.device) for m, z in queries.items()}, targets)

    def score_embeddings(self, queries: dict[str, torch.Tensor], candidates: torch.Tensor,
                         target: str) -> torch.Tensor:
        """Scores ``(Q, C)`` of embedded candidates of ``target`` for embedded query tuples."""
        return self.score_embedded_tuples(queries, {target: candidates})

    @torch.no_grad()
    def score_embedded_tuples(self, queries: dict[str, torch.Tensor],
                              candidates: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scores ``(Q, C)`` of embedded candidate tuples (``candidates[m]`` ``(C, E)``, row c of each
        together is candidate c) for embedded query tuples, with the run's own scoring rule."""
        q = self.query_tuple(queries, list(candidates))
        for m, z in candidates.items():
            refuse_nonfinite("candidates" if len(candidates) == 1 else f"candidates of {m!r}", z)
        plugin = self.parts.loss_name or type(self.loss).__name__
        return score_candidates(self.loss, q, {m: z.to(self.device) for m, z in candidates.items()}, plugin).float()

    @torch.no_grad()
    def inner_product_query(self, queries: dict[str, torch.Tensor], target: str) -> torch.Tensor:
        """``(Q, embed_dim)`` vectors whose inner products with candidates of ``target`` rank them as
        the run's score does (:meth:`polyalign.core.loss.Loss.inner_product_query`); an error
        when the loss's score is no inner product with the candidate."""
        q = self.query_tuple(queries, target)
        vectors = self.loss.inner_product_query(q, target)
        if vectors is None:
            why = getattr(self.loss, "inner_product_refusal", lambda: "")()
            raise PolyalignError(
                f"the run's loss ({type(self.loss).__name__}) scores a query of {', '.join(sorted(queries))} "
                f"against {target} with a rule that is no inner product with the candidate"
                f"{f' ({why})' if why else ''}, so an index "
                f"cannot rank for it; give the candidates as an embeddings file (polyalign embed) or a "
                f"source instead of a .faiss index")
        expected = (next(iter(q.values())).shape[0], self.embed_dim)
        if not isinstance(vectors, torch.Tensor) or tuple(vectors.shape) != expected:
            got = tuple(vectors.shape) if isinstance(vectors, torch.Tensor) else type(vectors).__name__
            raise PluginError(f"loss {type(self.loss).__name__}.inner_product_query() returned {got}; "
                              f"expected {expected} (queries x embedding size) or None")
        return vectors.float()

    def score(self, queries: dict[str, Any], candidates: dict[str, Any],
              root: str | Path | None = None) -> torch.Tensor:
        """Scores ``(Q, C)``: query tuples ``{modality: [Q values]}`` against candidates
        ``{target: [C values]}``, or candidate tuples ``{m1: [C values], m2: [C values]}``."""
        if not candidates:
            raise PolyalignError("no candidates given; give {target: [values]} (or several modalities, one "
                                 "list each, for candidate tuples)")
        return self.score_embedded_tuples(self.embed(queries, root), self.embed(candidates, root))

    def search(self, queries: dict[str, Any], candidates: dict[str, Any], top_k: int = 5,
               ids: Sequence[Any] | None = None, root: str | Path | None = None) -> list[list[Hit]]:
        """The ``top_k`` candidates of each query tuple, best first (``ids`` name the candidates)."""
        return rank_hits(self.score(queries, candidates, root), top_k, ids)


def is_export(path: Path) -> bool:
    """Whether ``path`` is a folder written by ``polyalign export``."""
    return (path / CARD_FILE).is_file() and (path / WEIGHTS).is_file()


def build_parts(recipe: Recipe, plugins: Plugins, allow_data: bool) -> Assembled:
    """The recipe's model and loss, built without its data when the recipe fixes every shape.

    With ``allow_data`` a run whose recipe leaves an encoder option to be inferred from the data
    (an encoder that does not report ``rebuild_options``) is built through its dataset instead.
    """
    try:
        return Assembled(None, build_model(recipe, plugins), build_loss(recipe, plugins),  # type: ignore[arg-type]
                         "+".join(n.plugin for n in recipe.losses))
    except PluginError:
        raise
    except PolyalignError as exc:
        if not allow_data:
            raise PolyalignError(f"cannot rebuild the model from its recipe: {exc}") from exc
        try:
            return assemble(recipe, plugins)
        except PolyalignError as exc2:
            raise PolyalignError(f"cannot rebuild the model from its recipe ({exc}), nor from its "
                                 f"dataset ({exc2})") from exc2


def load(path: str | Path, checkpoint: str = "last", device: str = "auto",
         plugins: Plugins | None = None) -> TrainedModel:
    """A run directory (``checkpoints/<checkpoint>``) or an exported folder as a :class:`TrainedModel`.

    ``checkpoint`` is ``last`` (the weights the run's evaluation used) or ``best`` (lowest
    validation loss); an exported folder holds one set of weights and ignores it.
    """
    plugins = plugins or default_plugins()
    path = Path(path)
    if is_export(path):
        card = check_card(path / CARD_FILE, plugins)
        recipe = read_recipe_file(path / RECIPE_FILE)
        weights_dir, checkpoint = path, str(card.get("checkpoint", "last"))
    elif (path / RECIPE_FILE).is_file():
        recipe = read_recipe_file(path / RECIPE_FILE)
        weights_dir = run_checkpoint(path, checkpoint)
    else:
        raise PolyalignError(f"{path} is neither a run directory ({RECIPE_FILE} + checkpoints/) nor an "
                             f"exported model ({CARD_FILE} + {WEIGHTS}); give the folder `polyalign "
                             f"train` printed or one `polyalign export` wrote")
    parts = build_parts(recipe, plugins, allow_data=not is_export(path))
    weights_file = resolve_checkpoint(weights_dir) / WEIGHTS
    try:
        parts.load_state_dict(load_weights(weights_dir))
    except RuntimeError as exc:
        raise CheckpointError(f"the weights in {weights_file} do not fit the model built from "
                              f"{path / RECIPE_FILE}: {' '.join(str(exc).split())[:600]}") from None
    return TrainedModel(parts, recipe, pick_device(device, option="device"), path, checkpoint, weights_file)
