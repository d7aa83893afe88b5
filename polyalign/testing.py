"""Conformance checks for plugin authors: call them from your own tests.

    from polyalign.testing import check_encoder, check_loss

    def test_imu_keeps_the_encoder_contract(tmp_path):
        ...  # write two or more real files
        check_encoder("imu", ["a.csv", "b.npy"], root=tmp_path, hidden=8)

    def test_vicreg_keeps_the_loss_contract():
        check_loss("vicreg")

    def test_my_folders_keep_the_dataset_contract(tmp_path):
        ...  # write a small tree of real files
        check_dataset("my_folders", path=str(tmp_path))

    def test_gap_keeps_the_evaluator_contract():
        check_evaluator("modality_gap")

Each check raises :class:`ConformanceError` (an ``AssertionError``) saying which property failed,
for which plugin, with the numbers. The built-in encoders, losses, datasets and evaluators are
tested with these same checks.
"""

from __future__ import annotations

import itertools
import math
import string
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from polyalign.core.batch import Collator
from polyalign.core.data import describe_value
from polyalign.core.encoder import Encoder, FileBytes, Input, encoder_width
from polyalign.core.errors import PolyalignError
from polyalign.core.layer_groups import checked_layer_groups
from polyalign.core.loss import Loss, LossOutput, check_loss_output, float_metrics
from polyalign.core.model import MultiModalModel

ENCODER_PROPERTIES = ("width", "load", "collate", "load_batch", "forward", "batch independence",
                      "missing rows", "gradients", "layer groups", "rebuild")
LOSS_PROPERTIES = ("output", "finite", "gradients", "modality order", "missing rows", "score shape",
                   "positive ranks first", "inner product")
MODALITY = "x"  # the modality name an encoder is checked under


class ConformanceError(AssertionError):
    """A plugin breaks a property of its contract; the message names the plugin, the property and the numbers."""


def _fail(plugin: str, prop: str, detail: str) -> ConformanceError:
    return ConformanceError(f"{plugin} fails {prop!r}: {detail}")


def _component(kind: str, plugin: Any, options: dict[str, Any], suffix: str = "", **context: Any) -> tuple[Any, str]:
    """The plugin to check and how messages name it: built from its registered name with ``options``
    (and the ``context`` its factory takes), or the object given (then ``options`` must be empty)."""
    if isinstance(plugin, str):
        import polyalign

        who = f"{kind} {plugin!r}{suffix}"
        try:
            return polyalign.build(kind, plugin, **context, **options), who
        except Exception as exc:
            raise _fail(who, "build", f"{type(exc).__name__}: {exc}") from exc
    if options:
        raise ValueError(f"options are for a registered {kind} name; build the object with them instead")
    return plugin, f"{kind} {type(plugin).__name__}{suffix}"


def _check_skip(skip: Collection[str], known: tuple[str, ...]) -> set[str]:
    unknown = [s for s in skip if s not in known]
    if unknown:
        raise ValueError(f"skip: unknown propert{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))}; "
                         f"the properties are: {', '.join(known)}")
    return set(skip)


@contextmanager
def _seeded(seed: int = 0) -> Iterator[None]:
    """The global torch RNG seeded inside, and left as it was after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _tensors(x: Input) -> dict[str, torch.Tensor]:
    return x if isinstance(x, dict) else {"": x}


def _is_input(x: Any) -> bool:
    if isinstance(x, dict):
        return bool(x) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in x.items())
    return isinstance(x, torch.Tensor)


def _difference(a: Input, b: Input) -> str | None:
    """Where two collated inputs differ (keys, shapes or values), or None if they are equal."""
    ta, tb = _tensors(a), _tensors(b)
    if set(ta) != set(tb):
        return f"keys {sorted(ta)} vs {sorted(tb)}"
    for k in ta:
        name = f"key {k!r}: " if k else ""
        if ta[k].shape != tb[k].shape:
            return f"{name}shape {tuple(ta[k].shape)} vs {tuple(tb[k].shape)}"
        if not torch.allclose(ta[k].double(), tb[k].double(), rtol=1e-5, atol=1e-6):
            return f"{name}max abs difference {float((ta[k].double() - tb[k].double()).abs().max()):.3g}"
    return None


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def check_encoder(encoder: Encoder | str, values: Sequence[Any], root: Path | str | None = None, *,
                  skip: Collection[str] = (), **options: Any) -> Encoder:
    """Check an encoder plugin on real raw ``values`` (two or more, as a dataset row holds them).

    ``encoder`` is a registered name, built like a run builds it (``options`` plus the context
    ``example=values[0]`` and ``root``), or an encoder object. Properties checked, in order:
    ``width`` (a positive int), ``load`` (each value gives a tensor or a dict of tensors),
    ``collate`` (one row per value), ``load_batch`` (equal to collating the loaded values, when it
    does not raise: raising makes the data loader load row by row),
    ``forward`` (finite floating ``(batch, width)`` features), ``batch independence`` (a row's
    features do not depend on the other rows of its batch, padding included; eval mode),
    ``missing rows`` (in a batch where a row lacks the modality, the core's collate and model
    embed the other rows as without the hole), ``gradients`` (finite, reaching the parameters;
    train mode), ``layer groups`` (``layer_groups()`` lists each parameter exactly once) and, for a
    registered name, ``rebuild`` (``rebuild_options()`` rebuilds the same architecture without an
    example). ``skip`` names properties not to check. Returns the encoder.
    """
    skipped = _check_skip(skip, ENCODER_PROPERTIES)
    values = list(values)
    if len(values) < 2:
        raise ValueError(f"check_encoder needs at least two raw values (got {len(values)}): a batch of one hides "
                         f"collate and padding bugs")
    root = Path(root) if root is not None else None
    enc, who = _component("encoder", encoder, options, modality=MODALITY, example=values[0], root=root)
    if "width" not in skipped:
        try:
            encoder_width(enc, who)
        except PolyalignError as exc:
            raise _fail(who, "width", str(exc)) from None
    width = int(enc.width)
    was_training = enc.training
    enc.eval()
    loaded = _load_each(enc, who, values, root)
    batch = _collate(enc, who, loaded, skipped)
    if "load_batch" not in skipped:
        try:
            together = enc.load_batch(values, root)
        except Exception:  # allowed: the data loader then loads the batch row by row
            together = batch
        diff = _difference(together, batch)
        if diff is not None:
            raise _fail(who, "load_batch", f"load_batch(values) differs from collate([load(v) for v in values]): "
                                           f"{diff}")
    with torch.no_grad():
        feats = _forward(enc, who, batch, width, len(values), "forward" in skipped)
        if "batch independence" not in skipped:
            for i, x in enumerate(loaded):
                alone = enc(enc.collate([x]))
                if alone.shape != (1, width) or not torch.allclose(alone[0], feats[i], rtol=1e-4, atol=1e-5):
                    raise _fail(who, "batch independence",
                                f"row {i} ({describe_value(values[i])}) encoded alone differs from the same row in a "
                                f"batch of {len(values)} by up to {_max_diff(alone.reshape(-1), feats[i]):.3g} "
                                f"(eval mode): mask the padding (pad_with_mask gives the mask) and do not mix rows")
        if "missing rows" not in skipped:
            _check_holes(enc, who, loaded, feats)
    if "gradients" not in skipped:
        enc.train()
        _check_encoder_gradients(enc, who, batch)
    enc.train(was_training)
    if "layer groups" not in skipped:
        try:
            checked_layer_groups(enc, who)
        except PolyalignError as exc:
            raise _fail(who, "layer groups", str(exc)) from None
    if isinstance(encoder, str) and "rebuild" not in skipped:
        _check_rebuild(enc, encoder, who, options)
    return enc


def _load_each(enc: Encoder, who: str, values: list[Any], root: Path | None) -> list[Input]:
    loaded = []
    for i, value in enumerate(values):
        try:
            x = enc.load(value, root)
        except Exception as exc:
            raise _fail(who, "load", f"load(value {i}: {describe_value(value)}, root={root}) raised "
                                     f"{type(exc).__name__}: {exc}") from exc
        if not _is_input(x):
            raise _fail(who, "load", f"load(value {i}) returned a {type(x).__name__}; it must return a tensor or a "
                                     f"dict of tensors")
        loaded.append(x)
    return loaded


def _collate(enc: Encoder, who: str, loaded: list[Input], skipped: set[str]) -> Input:
    try:
        batch = enc.collate(loaded)
    except Exception as exc:
        raise _fail(who, "collate", f"collate of {len(loaded)} loaded values raised {type(exc).__name__}: "
                                    f"{exc}") from exc
    if not _is_input(batch):
        raise _fail(who, "collate", f"collate returned a {type(batch).__name__}; it must return a tensor or a dict "
                                    f"of tensors")
    rows = {k: (t.shape[0] if t.dim() else None) for k, t in _tensors(batch).items()}
    if "collate" not in skipped and any(n != len(loaded) for n in rows.values()):
        shown = ", ".join(f"{k or 'tensor'}: {n}" for k, n in rows.items())
        raise _fail(who, "collate", f"collating {len(loaded)} values gave {shown} rows; every tensor needs one row "
                                    f"per value (batch first)")
    return batch


def _forward(enc: Encoder, who: str, batch: Input, width: int, n: int, lenient: bool) -> torch.Tensor:
    try:
        feats = enc(batch)
    except Exception as exc:
        raise _fail(who, "forward", f"forward on a batch of {n} raised {type(exc).__name__}: {exc}") from exc
    if lenient:
        return feats
    if not isinstance(feats, torch.Tensor):
        raise _fail(who, "forward", f"forward returned a {type(feats).__name__}, not a tensor")
    if tuple(feats.shape) != (n, width) or not feats.is_floating_point():
        raise _fail(who, "forward", f"forward returned {tuple(feats.shape)} {feats.dtype} for a batch of {n}; "
                                    f"expected a floating ({n}, {width}) tensor (width = {width})")
    bad = int((~torch.isfinite(feats)).sum())
    if bad:
        raise _fail(who, "forward", f"{bad} of {feats.numel()} features are NaN or infinite")
    return feats


def _check_holes(enc: Encoder, who: str, loaded: list[Input], feats: torch.Tensor) -> None:
    """The real path of a batch with a hole: the core's Collator and MultiModalModel."""
    items = [(0, {MODALITY: loaded[0]}, None), (1, {}, None)]
    items += [(i + 1, {MODALITY: x}, None) for i, x in enumerate(loaded[1:], start=1)]
    try:
        batch = Collator({MODALITY: enc.collate})(items)
    except Exception as exc:
        raise _fail(who, "missing rows", f"collating a batch whose row 1 lacks the modality raised "
                                         f"{type(exc).__name__}: {exc}") from exc
    expected = [True, False] + [True] * (len(loaded) - 1)
    if batch.present[MODALITY].tolist() != expected:
        raise _fail(who, "missing rows", f"present mask {batch.present[MODALITY].tolist()}, expected {expected}")
    with _seeded():
        model = MultiModalModel({MODALITY: enc}, embed_dim=8, normalize="none", plugin_names={MODALITY: who})
    model.eval()
    try:
        with_hole = model(batch.inputs, batch.present)[MODALITY]
    except Exception as exc:
        raise _fail(who, "missing rows", f"the model on a batch with a missing row raised {type(exc).__name__}: "
                                         f"{exc}") from exc
    direct = model.heads[MODALITY](feats)
    rows = torch.tensor([i for i, p in enumerate(expected) if p])
    if not torch.allclose(with_hole[rows], direct, rtol=1e-4, atol=1e-5) or float(with_hole[1].abs().sum()) != 0:
        raise _fail(who, "missing rows", f"embeddings of the present rows differ by up to "
                                         f"{_max_diff(with_hole[rows], direct):.3g} from the batch without the hole "
                                         f"(the missing row's embedding: {with_hole[1].abs().sum():.3g} away from 0)")


def _check_encoder_gradients(enc: Encoder, who: str, batch: Input) -> None:
    trainable = [(n, p) for n, p in enc.named_parameters() if p.requires_grad]
    with _seeded():
        feats = enc(batch)
        weights = torch.randn(feats.shape, dtype=feats.dtype)  # a random direction: sum() can be flat (LayerNorm)
    if trainable and not feats.requires_grad:
        raise _fail(who, "gradients", f"the features do not depend on any of its {len(trainable)} trainable "
                                      f"parameters (computed under no_grad, or detached?)")
    if not trainable:
        return
    enc.zero_grad(set_to_none=True)
    (feats * weights).sum().backward()
    bad = [n for n, p in trainable if p.grad is not None and not torch.isfinite(p.grad).all()]
    if bad:
        raise _fail(who, "gradients", f"non-finite gradients in {len(bad)} parameter(s): {', '.join(bad[:5])}")
    reached = [n for n, p in trainable if p.grad is not None and bool(p.grad.abs().sum() > 0)]
    enc.zero_grad(set_to_none=True)
    if not reached:
        raise _fail(who, "gradients", f"none of its {len(trainable)} trainable parameters gets a nonzero gradient")


def _check_rebuild(enc: Encoder, name: str, who: str, options: dict[str, Any]) -> None:
    import polyalign

    inferred = enc.rebuild_options()
    try:
        rebuilt = polyalign.build("encoder", name, **{**options, **inferred})
    except Exception as exc:
        raise _fail(who, "rebuild", f"building it from its options plus rebuild_options() {inferred} without an "
                                    f"example raised {type(exc).__name__}: {exc}; return every option inferred from "
                                    f"the example from rebuild_options()") from exc
    mine = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    if mine != theirs or int(getattr(rebuilt, "width", -1)) != int(enc.width):
        diff = sorted(set(mine.items()) ^ set(theirs.items()))[:3]
        raise _fail(who, "rebuild", f"rebuilt from its options plus rebuild_options() {inferred} without an example, "
                                    f"it has width {getattr(rebuilt, 'width', None)} (was {enc.width}) and weights "
                                    f"differing in {diff or 'nothing'}; return every option inferred from the "
                                    f"example from rebuild_options()")


def check_loss(loss: Loss | str, *, modality_counts: Sequence[int] = (2, 3, 4, 5), batch_size: int = 8,
               embed_dim: int = 16, skip: Collection[str] = (), **options: Any) -> None:
    """Check a loss plugin for each number of modalities in ``modality_counts``.

    ``loss`` is a registered name, built for each count like a run builds it (``options`` plus
    the context ``modalities`` and ``embed_dim``), or a loss object used for every count.
    Properties checked on random unit embeddings: ``output`` (a ``LossOutput`` with a 0-dim
    float loss and metrics that are numbers or detached 0-dim tensors), ``finite`` (loss and
    metrics), ``gradients`` (finite, reaching every modality and the loss's parameters),
    ``modality order`` (the same loss for the modalities in reverse order), ``missing rows``
    (absent rows neither change the loss nor get a
    gradient; all-True masks equal ``present=None``; a modality absent from every row, or rows
    with a single modality, still give a finite loss), ``score shape`` (``(queries, candidates)``,
    finite), ``positive ranks first`` (on aligned embeddings each query scores its own tuple's
    target first) and ``inner product`` (where ``inner_product_query`` gives vectors, they are
    ``(queries, d)`` and rank the candidates as ``score`` does). Calls are made under a fixed seed,
    so a loss drawing random numbers gives comparable values. ``skip`` names properties not to check.
    """
    skipped = _check_skip(skip, LOSS_PROPERTIES)
    if batch_size < 6 or embed_dim < batch_size:
        raise ValueError("check_loss needs batch_size >= 6 and embed_dim >= batch_size")
    for m in modality_counts:
        if not 2 <= m <= len(string.ascii_lowercase):
            raise ValueError(f"modality_counts: {m} is not between 2 and 26")
        names = list(string.ascii_lowercase[:m])
        fn, who = _component("loss", loss, options, f" (M={m})", modalities=names, embed_dim=embed_dim)
        _LossCheck(fn, who, names, batch_size, embed_dim, skipped).run()


class _LossCheck:
    """The checks of one loss for one number of modalities."""

    def __init__(self, fn: Loss, who: str, names: list[str], n: int, d: int, skipped: set[str]):
        self.fn, self.who, self.names, self.n, self.d, self.skipped = fn, who, names, n, d, skipped
        self.dtype = next((p.dtype for p in fn.parameters() if p.is_floating_point()), torch.float32)
        self.params = [(k, p) for k, p in fn.named_parameters() if p.requires_grad]

    def fail(self, prop: str, detail: str) -> ConformanceError:
        return _fail(self.who, prop, detail)

    def embeddings(self, seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return {m: torch.nn.functional.normalize(torch.randn(self.n, self.d, generator=g, dtype=torch.float64), dim=1)
                .to(self.dtype).requires_grad_() for m in self.names}

    def call(self, embeddings: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None,
             what: str) -> LossOutput:
        with _seeded():
            try:
                out = self.fn(embeddings, present)
            except Exception as exc:
                raise self.fail(what, f"forward raised {type(exc).__name__}: {exc}") from exc
        if "output" not in self.skipped:
            try:
                check_loss_output(out, self.who)
            except PolyalignError as exc:
                raise self.fail("output", str(exc)) from None
        return out

    def run(self) -> None:
        emb = self.embeddings(0)
        out = self.call(emb, None, "output")
        if "finite" not in self.skipped:
            self.check_finite(out, "with every row present")
        if "gradients" not in self.skipped:
            self.check_gradients(out, emb)
        if "modality order" not in self.skipped:
            reverse = {m: emb[m] for m in reversed(self.names)}
            again = self.call(reverse, None, "modality order")
            if not self.close(again.loss, out.loss):
                raise self.fail("modality order", f"the loss is {float(out.loss.detach()):.6g} for modalities "
                                f"{', '.join(self.names)} and {float(again.loss.detach()):.6g} for the same "
                                f"embeddings in reverse order; use modality names, not positions (a loss drawing "
                                f"random numbers must not tie its draws to positions either)")
        if "missing rows" not in self.skipped:
            self.check_missing(emb, out)
        with torch.no_grad():
            if "score shape" not in self.skipped or "positive ranks first" not in self.skipped:
                self.check_score()
            if "inner product" not in self.skipped:
                self.check_inner_product()

    def close(self, a: torch.Tensor, b: torch.Tensor) -> bool:
        return bool(torch.allclose(a.detach().double(), b.detach().double(), rtol=1e-4, atol=1e-5))

    def check_finite(self, out: LossOutput, case: str) -> None:
        if not torch.isfinite(out.loss):
            raise self.fail("finite", f"the loss is {float(out.loss.detach())} {case}")
        bad = {k: v for k, v in float_metrics(out.metrics).items() if not math.isfinite(v)}
        if bad:
            raise self.fail("finite", f"metrics {bad} {case}")

    def check_gradients(self, out: LossOutput, emb: dict[str, torch.Tensor]) -> None:
        if not out.loss.requires_grad:
            raise self.fail("gradients", "the loss does not depend on the embeddings (no gradient): keep it a tensor "
                                         "computed from them (no .item(), .detach() or torch.tensor(...))")
        inputs = [emb[m] for m in self.names] + [p for _, p in self.params]
        grads = torch.autograd.grad(out.loss, inputs, allow_unused=True)
        for name, g in zip(self.names + [f"parameter {k}" for k, _ in self.params], grads):
            if g is not None and not torch.isfinite(g).all():
                raise self.fail("gradients", f"the gradient of {name} has {int((~torch.isfinite(g)).sum())} "
                                             f"non-finite entries")
        for m, g in zip(self.names, grads):
            if g is None or not bool(g.abs().sum() > 0):
                raise self.fail("gradients", f"modality {m!r} gets no gradient: the loss must align every modality "
                                             f"({', '.join(self.names)})")

    def masks(self) -> dict[str, torch.Tensor]:
        """Row ``j + 1`` lacks modality ``j``; the other rows are complete."""
        present = {m: torch.ones(self.n, dtype=torch.bool) for m in self.names}
        for j, m in enumerate(self.names):
            present[m][(j + 1) % self.n] = False
        return present

    def check_missing(self, emb: dict[str, torch.Tensor], out: LossOutput) -> None:
        everyone = {m: torch.ones(self.n, dtype=torch.bool) for m in self.names}
        same = self.call(emb, everyone, "missing rows")
        if not self.close(same.loss, out.loss):
            raise self.fail("missing rows", f"all-True present masks give {float(same.loss.detach()):.6g} but "
                                            f"present=None gives {float(out.loss.detach()):.6g} (None means every "
                                            f"row is present: use full_present)")
        present = self.masks()
        holes = self.call(emb, present, "missing rows")
        if "finite" not in self.skipped:
            self.check_finite(holes, "with some rows missing")
        garbage = {m: torch.where(present[m][:, None], z, torch.full_like(z, 3.0)) for m, z in emb.items()}
        other = self.call(garbage, present, "missing rows")
        if not self.close(other.loss, holes.loss):
            raise self.fail("missing rows", f"changing only the absent rows (present=False) changes the loss from "
                                            f"{float(holes.loss.detach()):.6g} to {float(other.loss.detach()):.6g}: "
                                            f"absent rows must be left out")
        if holes.loss.requires_grad:
            grads = torch.autograd.grad(holes.loss, [emb[m] for m in self.names], allow_unused=True)
            for m, g in zip(self.names, grads):
                if g is not None and bool(g[~present[m]].abs().sum() > 0):
                    rows = (~present[m]).nonzero(as_tuple=True)[0].tolist()
                    raise self.fail("missing rows", f"absent row(s) {rows} of modality {m!r} get a gradient "
                                                    f"({float(g[~present[m]].abs().sum()):.3g})")
        cases = {"with modality {!r} absent from every row".format(self.names[-1]):
                 {**everyone, self.names[-1]: torch.zeros(self.n, dtype=torch.bool)},
                 "when no row has two modalities":
                 {m: torch.arange(self.n) % len(self.names) == j for j, m in enumerate(self.names)}}
        for case, masks in cases.items():
            degenerate = self.call(emb, masks, "missing rows")
            if not torch.isfinite(degenerate.loss):
                raise self.fail("missing rows", f"the loss is {float(degenerate.loss.detach())} {case}")
            if degenerate.loss.requires_grad:
                grads = torch.autograd.grad(degenerate.loss, [emb[m] for m in self.names], allow_unused=True)
                if any(g is not None and not torch.isfinite(g).all() for g in grads):
                    raise self.fail("missing rows", f"non-finite gradients {case}")

    def aligned(self) -> dict[str, torch.Tensor]:
        """Row i of every modality near the i-th basis vector: a tuple agrees with itself only."""
        g = torch.Generator().manual_seed(1)
        base = torch.eye(self.n, self.d, dtype=torch.float64)
        return {m: torch.nn.functional.normalize(base + 0.05 * torch.randn(self.n, self.d, generator=g,
                                                                          dtype=torch.float64), dim=1).to(self.dtype)
                for m in self.names}

    def queries(self) -> list[list[str]]:
        """The query sets scored: the first modality alone, and every modality but the target."""
        return [[self.names[0]], self.names[:-1]] if len(self.names) > 2 else [[self.names[0]]]

    def check_inner_product(self) -> None:
        emb = {m: z.detach() for m, z in self.embeddings(3).items()}
        target = self.names[-1]
        for query in self.queries():
            queries = {q: emb[q] for q in query}
            with _seeded():
                try:
                    vectors = self.fn.inner_product_query(queries, target)
                except Exception as exc:
                    raise self.fail("inner product", f"inner_product_query(query {'+'.join(query)}, target "
                                                     f"{target!r}) raised {type(exc).__name__}: {exc}") from exc
                if vectors is None:  # the loss declares no inner-product form: nothing to check
                    continue
                scores = self.fn.score(queries, emb[target], target)
            if not isinstance(vectors, torch.Tensor) or tuple(vectors.shape) != (self.n, self.d):
                got = tuple(vectors.shape) if isinstance(vectors, torch.Tensor) else type(vectors).__name__
                raise self.fail("inner product", f"inner_product_query({self.n} queries of {'+'.join(query)}) "
                                                 f"returned {got}; expected ({self.n}, {self.d}) or None")
            order = (vectors @ emb[target].T).argsort(dim=1, descending=True)
            ranked = scores.gather(1, order)  # the scores, in the order the inner products rank the candidates
            rise = ranked[:, 1:] - ranked[:, :-1]
            tol = 1e-5 * float(scores.abs().max()) + 1e-7
            if bool((rise > tol).any()):
                i, j = (rise > tol).nonzero()[0].tolist()
                better, worse = int(order[i, j + 1]), int(order[i, j])
                raise self.fail("inner product", f"for query row {i} of {'+'.join(query)}, inner_product_query "
                                f"ranks candidate {worse} above candidate {better}, but score gives "
                                f"{float(scores[i, better]):.6g} > {float(scores[i, worse]):.6g}; return None "
                                f"when the score is no non-decreasing function of one inner product")

    def check_score(self) -> None:
        emb = self.aligned()
        target = self.names[-1]
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(2))
        candidates = emb[target][order]
        where = torch.argsort(order)  # where[i]: the position of row i's own target among the candidates
        n_q = self.n - 2
        for query in self.queries():
            queries = {q: emb[q][:n_q] for q in query}
            with _seeded():
                try:
                    scores = self.fn.score(queries, candidates, target)
                except Exception as exc:
                    raise self.fail("score shape", f"score(query {'+'.join(query)}, target {target!r}) raised "
                                                   f"{type(exc).__name__}: {exc}") from exc
            if "score shape" not in self.skipped:
                if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (n_q, self.n):
                    got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
                    raise self.fail("score shape", f"score({n_q} queries of {'+'.join(query)}, {self.n} candidates "
                                                   f"of {target!r}) returned {got}; expected ({n_q}, {self.n})")
                if not torch.isfinite(scores).all():
                    raise self.fail("score shape", f"score returned {int((~torch.isfinite(scores)).sum())} "
                                                   f"non-finite values")
            if "positive ranks first" not in self.skipped:
                best = scores.argmax(dim=1)
                wrong = (best != where[:n_q]).nonzero(as_tuple=True)[0].tolist()
                if wrong:
                    i = wrong[0]
                    raise self.fail("positive ranks first", f"on aligned embeddings, query row {i} of "
                                    f"{'+'.join(query)} ranks candidate {int(best[i])} first (score "
                                    f"{float(scores[i, best[i]]):.4g}) above its own {target!r} (score "
                                    f"{float(scores[i, where[i]]):.4g}); {len(wrong)} of {n_q} queries miss. Higher "
                                    f"scores must mean a better match")


DATASET_PROPERTIES = ("splits", "rows", "modalities", "labels", "ids", "determinism", "iterable form")
EVALUATOR_PROPERTIES = ("rows", "names", "finite", "determinism")


def _same(a: Any, b: Any) -> bool:
    """Whether two raw values are equal (arrays and lists element-wise, shard members by bytes)."""
    if isinstance(a, FileBytes) or isinstance(b, FileBytes):
        return isinstance(a, FileBytes) and isinstance(b, FileBytes) and a.data == b.data
    if isinstance(a, (str, bytes, Path, int, float)) or a is None:
        return type(a) is type(b) and a == b
    try:
        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    except (TypeError, ValueError):
        return a == b


def _first_rows(split: Any, count: int) -> list[Any]:
    return list(itertools.islice(iter(split), count))


def check_dataset(dataset: Any, *, rows: int = 64, skip: Collection[str] = (), **options: Any) -> Any:
    """Check a dataset plugin on the first ``rows`` rows of each split.

    ``dataset`` is a registered name, built like a run builds it (``options`` plus the context
    ``seed=0``), or a dataset object. Properties checked, in order: ``splits`` (``split(name)`` of
    train, val and test gives a sequence or a :class:`~polyalign.core.stream.StreamSplit`; train
    has rows), ``rows`` (each row a dict with text keys), ``modalities`` (``modalities`` names
    usable modalities; each is provided by some checked train row, and no row holds a key that is
    neither a modality nor ``label``/``id``: such a value would be silently ignored), ``labels``
    (within a split all ints or all strings; ints index ``label_names`` when the dataset has
    them), ``ids`` (distinct within a split), ``determinism`` (a registered name built twice with
    the same seed, or an object asked twice, gives the same rows) and ``iterable form`` (for a
    stream: its length is the sum of its shard sizes, each shard reads as many samples as its
    size says, and reading from a position skips exactly the samples before it). ``skip`` names
    properties not to check. Returns the dataset.
    """
    from polyalign.core.data import SPLITS
    from polyalign.core.modality_check import absent_modality_problems
    from polyalign.core.recipe import modality_name_problem
    from polyalign.core.stream import is_stream
    from polyalign.files.manifest_file import RESERVED_KEYS

    skipped = _check_skip(skip, DATASET_PROPERTIES)
    data, who = _component("dataset", dataset, options, seed=0)
    names = getattr(data, "modalities", None)
    if "modalities" not in skipped:
        if not names or isinstance(names, str) or not all(isinstance(m, str) for m in names):
            raise _fail(who, "modalities", f"modalities is {names!r}; it must be a non-empty sequence of names")
        bad = [p for m in names if (p := modality_name_problem(m))]
        if bad:
            raise _fail(who, "modalities", bad[0])
    names = list(names or [])
    splits, heads = {}, {}
    for s in SPLITS:
        try:
            splits[s] = data.split(s)
        except Exception as exc:
            raise _fail(who, "splits", f"split({s!r}) raised {type(exc).__name__}: {exc}") from exc
        split = splits[s]
        sequence = hasattr(split, "__len__") and hasattr(split, "__getitem__") and not isinstance(split, Mapping)
        if "splits" not in skipped and not is_stream(split) and not sequence:
            raise _fail(who, "splits", f"split({s!r}) returned a {type(split).__name__}; return a sequence of "
                                       f"samples (the map form) or a StreamSplit (the iterable form)")
        heads[s] = _first_rows(split, rows)
    if "splits" not in skipped and not heads["train"]:
        raise _fail(who, "splits", "the train split has no rows")
    for s, head in heads.items():
        if "rows" not in skipped:
            bad = next((i for i, r in enumerate(head) if not isinstance(r, dict)
                        or not all(isinstance(k, str) for k in r)), None)
            if bad is not None:
                raise _fail(who, "rows", f"row {bad} of {s!r} is {describe_value(head[bad])}; a row is a dict "
                                         f"{{modality: raw value}} (plus optional label and id)")
        if "modalities" not in skipped and s == "train":
            plugin = dataset if isinstance(dataset, str) else type(dataset).__name__
            problems = absent_modality_problems(names, "train", splits["train"], head, plugin)
            if problems:
                raise _fail(who, "modalities", problems[0])
        if "modalities" not in skipped:
            strays = [k for k in dict.fromkeys(k for r in head for k in r) if k not in names and k not in RESERVED_KEYS]
            if strays:
                raise _fail(who, "modalities", f"rows of {s!r} hold {', '.join(map(repr, strays))}, which is no "
                                               f"modality of the dataset ({', '.join(names)}) nor label/id: it "
                                               f"would be ignored. Name it as in modalities, or leave it out")
        if "labels" not in skipped:
            _check_labels(who, s, head, getattr(data, "label_names", None))
        if "ids" not in skipped:
            ids = [r["id"] for r in head if r.get("id") is not None]
            twice = next((i for i in ids if ids.count(i) > 1), None)
            if twice is not None:
                raise _fail(who, "ids", f"id {twice!r} appears {ids.count(twice)} times in the first {len(head)} rows "
                                        f"of {s!r}; ids name rows in search results and must be distinct")
    if "determinism" not in skipped:
        again = _component("dataset", dataset, options, seed=0)[0] if isinstance(dataset, str) else data
        for s in SPLITS:
            other = _first_rows(again.split(s), rows)
            diff = next((i for i, (x, y) in enumerate(zip(heads[s], other))
                         if set(x) != set(y) or not all(_same(x[k], y[k]) for k in x)), None)
            if len(other) != len(heads[s]) or diff is not None:
                how = "built twice with seed 0" if isinstance(dataset, str) else "read twice"
                raise _fail(who, "determinism", f"{how}, split {s!r} differs at row "
                                                f"{diff if diff is not None else min(len(other), len(heads[s]))}: "
                                                f"draw random numbers from the seed given to the factory")
    if "iterable form" not in skipped:
        for s, split in splits.items():
            if is_stream(split):
                _check_stream(who, s, split)
    return data


def _check_labels(who: str, split: str, head: list[dict], label_names: Any) -> None:
    labels = [r["label"] for r in head if r.get("label") is not None]
    kinds = {"int" if isinstance(x, int) and not isinstance(x, bool) else "str" if isinstance(x, str) else "other"
             for x in labels}
    if "other" in kinds or len(kinds) > 1:
        odd = next(x for x in labels if isinstance(x, bool) or not isinstance(x, (int, str)) or len(kinds) > 1)
        raise _fail(who, "labels", f"labels of {split!r} must be all ints (class indices) or all strings (class "
                                   f"names); found {describe_value(odd)} among {', '.join(sorted(kinds))} labels")
    if label_names is None:
        return
    if isinstance(label_names, str) or not all(isinstance(n, str) for n in label_names):
        raise _fail(who, "labels", f"label_names is {describe_value(label_names)}; it must be a list of class names")
    out = [x for x in labels if isinstance(x, int) and not 0 <= x < len(label_names)]
    if out:
        raise _fail(who, "labels", f"label {out[0]} of {split!r} indexes no class of label_names "
                                   f"({len(label_names)} names)")


def _check_stream(who: str, split_name: str, split: Any) -> None:
    total = sum(s.size for s in split.shards)
    if len(split) != total:
        raise _fail(who, "iterable form", f"split {split_name!r}: len() is {len(split)} but its shards hold {total}")
    for shard in split.shards[:3]:
        read = [key for key, _ in split.read(shard)]
        if len(read) != shard.size:
            raise _fail(who, "iterable form", f"shard {shard.name} of {split_name!r} says it holds {shard.size} "
                                              f"samples but read() gives {len(read)}")
        skip = shard.size // 2
        tail = [key for key, _ in split.read(shard, skip)]
        if tail != read[skip:]:
            raise _fail(who, "iterable form", f"shard {shard.name}: read(shard, skip={skip}) gives keys "
                                              f"{tail[:3]}..., expected {read[skip:skip + 3]}...: skip must pass "
                                              f"exactly the samples before it (resuming relies on it)")


class _TinyData:
    """What :func:`check_evaluator` evaluates on by default: vectors ``a`` and ``b`` and a ``text``
    naming the class, three classes with ``label_names``, ids, and 24 rows per split."""

    modalities = ("a", "b", "text")
    root = None
    label_names: ClassVar[list[str]] = ["red", "green", "blue"]

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self._splits = {}
        for s in ("train", "val", "test"):
            labels = np.arange(24) % 3
            a = np.eye(3)[labels] + 0.3 * rng.normal(size=(24, 3))
            b = np.eye(3)[labels] @ rng.normal(size=(3, 4)) + 0.3 * rng.normal(size=(24, 4))
            self._splits[s] = [{"a": a[i].astype(np.float32), "b": b[i].astype(np.float32),
                                "text": f"{self.label_names[labels[i]]} {i}", "label": int(labels[i]), "id": f"{s}{i}"}
                               for i in range(24)]

    def split(self, name: str) -> list[dict]:
        return self._splits[name]


def _tiny_parts() -> Any:
    """A tiny untrained model, loss and dataset (``_TinyData``) to run an evaluator on."""
    import polyalign
    from polyalign.core.assemble import Assembled

    with _seeded():
        encoders = {"a": polyalign.build("encoder", "vector", dim=3, hidden=[]),
                    "b": polyalign.build("encoder", "vector", dim=4, hidden=[]),
                    "text": polyalign.build("encoder", "byte_text", dim=8, layers=1, heads=2, max_length=16)}
        model = MultiModalModel(encoders, embed_dim=8, normalize="l2")
        loss = polyalign.build("loss", "clip", modalities=list(encoders), embed_dim=8)
    return Assembled(_TinyData(), model, loss, "clip")


def check_evaluator(evaluator: Any, parts: Any = None, *, split: str = "test", skip: Collection[str] = (),
                    **options: Any) -> list[dict[str, Any]]:
    """Check an evaluator plugin by running it on a tiny model and dataset.

    ``evaluator`` is a registered name, built with ``options``, or an evaluator object (called
    with an :class:`~polyalign.core.evaluator.EvalContext`). ``parts`` is what it runs on (an
    :class:`~polyalign.core.assemble.Assembled`, e.g. ``assemble(recipe)``); by default an
    untrained model over vectors ``a`` (3 numbers) and ``b`` (4) and a ``text`` naming the class,
    with int labels, ``label_names`` and ids, 24 rows per split, clip loss. Properties checked:
    ``rows`` (a non-empty list of rows ``{task, target, query, metric, value}`` as
    :func:`~polyalign.core.evaluator.row_problem` wants them, no two alike but for their numbers),
    ``names`` (``query`` sorted modality names of the model, ``target`` a modality or modalities
    joined by ``+`` or a name of its own such as ``class``; ``task``, ``target`` and ``metric``
    without ``/`` or spaces, as they become metric paths), ``finite`` (values) and ``determinism``
    (a second run gives the same rows). ``skip`` names properties not to check. Returns the rows.
    """
    from polyalign.core.evaluator import NUMBER_KEYS, EvalContext, row_problem

    skipped = _check_skip(skip, EVALUATOR_PROPERTIES)
    fn, who = _component("evaluator", evaluator, options)
    parts = parts if parts is not None else _tiny_parts()
    parts.model.eval()

    def run() -> list[dict[str, Any]]:
        with _seeded():
            try:
                return fn(EvalContext(parts, split, torch.device("cpu"), batch_size=16, seed=0))
            except Exception as exc:
                raise _fail(who, "rows", f"it raised {type(exc).__name__} on {len(parts.samples(split))} rows "
                                         f"of {split!r}: {exc}") from exc

    rows = run()
    if "rows" not in skipped:
        if not isinstance(rows, list) or not rows:
            got = "no rows" if rows == [] else f"a {type(rows).__name__}"
            raise _fail(who, "rows", f"it returned {got} on {len(parts.samples(split))} complete rows of {split!r}; "
                                     f"return a list of rows {{task, target, query, metric, value}}")
        for i, row in enumerate(rows):
            problem = row_problem(row)
            if problem:
                raise _fail(who, "rows", f"row {i}: {problem}")
        seen: dict[str, int] = {}
        for i, row in enumerate(rows):
            key = repr(sorted((k, v) for k, v in row.items() if k not in ("value", "ci_low", "ci_high")))
            if key in seen:
                raise _fail(who, "rows", f"rows {seen[key]} and {i} are alike but for their numbers ({row['task']}, "
                                         f"{row['target']} from {'+'.join(row['query'])}, {row['metric']}); add a key "
                                         f"that tells them apart")
            seen[key] = i
    if "names" not in skipped:
        modalities = list(parts.model.modalities)
        for i, row in enumerate(rows):
            query = row["query"]
            if query != sorted(query) or not all(q in modalities for q in query):
                raise _fail(who, "names", f"row {i}: query {query} must be a sorted list of modalities of the model "
                                          f"({', '.join(modalities)})")
            for key in ("task", "target", "metric"):
                if not row[key] or "/" in row[key] or any(c.isspace() for c in row[key]):
                    raise _fail(who, "names", f"row {i}: {key} {row[key]!r} must be non-empty, without '/' or "
                                              f"spaces (it becomes part of a metric path such as "
                                              f"eval/test/TASK/TARGET_from_QUERY/METRIC)")
    if "finite" not in skipped:
        bad = next(((i, k) for i, r in enumerate(rows) for k in NUMBER_KEYS
                    if k in r and not math.isfinite(r[k])), None)
        if bad is not None:
            raise _fail(who, "finite", f"row {bad[0]}: {bad[1]} is {rows[bad[0]][bad[1]]}")
    if "determinism" not in skipped:
        again = run()
        diff = next((i for i, (x, y) in enumerate(zip(rows, again))
                     if set(x) != set(y) or any(not _close_value(x[k], y[k]) for k in x)), None)
        if len(again) != len(rows) or diff is not None:
            raise _fail(who, "determinism", f"a second run on the same model and data gives {len(again)} rows "
                                            f"(first {len(rows)}), differing at row {diff}: seed its random draws "
                                            f"from the context's seed")
    return rows


def _close_value(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b
