"""Every hook a polyalign plugin can implement.

A plugin is a module (or object) with functions decorated by ``polyalign.hookimpl``.
Hooks are called with keyword arguments only; an implementation may accept fewer
arguments than the spec lists, so specs can grow without breaking plugins. A factory may name
only the context arguments its kind lists below (``registry.CONTEXT``); any other name is an
error listing them. ``polyalign.testing`` checks encoders and losses against their contracts.

A component's ``config`` model is validated with every recipe. Its validators may read
``info.context`` (``None`` outside a recipe): the recipe's ``modalities``, ``embed_dim`` and global
``batch_size`` (:func:`polyalign.core.recipe.plugin_context`), to refuse options that cannot run
with them before anything starts (Symile's ``n_squared`` negatives refuse a batch and modality
count whose memory exceeds the machine's, with the estimate).

A component that imports modules beyond polyalign's own dependencies declares them when it is
registered, ``register(..., requires={"sklearn": "scikit-learn"})`` (module -> what to pip install), and
its config may add some from its options with a ``requires()`` method returning the same kind of mapping
(an encoder's ``lora`` needs peft). A recipe using a component whose modules are not installed is
refused before training starts, and by ``polyalign validate``, with the ``pip install`` command.
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("polyalign")
hookimpl = pluggy.HookimplMarker("polyalign")

Register = Callable[..., None]


@hookspec
def register_encoders(register: Register) -> None:
    """Register encoder plugins: ``register(name, factory, config=Model, help="...")``.

    ``factory(config, **context)`` returns a :class:`polyalign.core.encoder.Encoder`
    (an ``nn.Module`` mapping a collated batch to ``(B, width)``, which also knows how to
    ``decode(value, root)`` one raw value, deterministically (required; an optional
    ``finish(x, train)`` adds augmentation), and ``collate`` a list of them). Context arguments
    the factory may accept (declare only those you need): ``modality`` (the recipe's name for it),
    ``example`` (one raw value from the train split, e.g. to infer an input size) and ``root``
    (the dataset's folder).
    An encoder that infers options from ``example`` returns them from ``rebuild_options()``,
    so a trained model can be rebuilt without its data (``polyalign.load``); one that takes
    statistics from the whole train split (``tabular``'s ``mean: auto``) computes them in
    ``fit(values, root)`` and returns them from ``rebuild_options()`` too. An encoder with
    blocks returns them from ``layer_groups()`` (for ``unlocked_layers`` and ``train.layer_decay``);
    one with training-only structure (LoRA adapters) folds it away in ``merge_for_export()``.
    """


@hookspec
def register_losses(register: Register) -> None:
    """Register loss plugins: ``register(name, factory, config=Model, help="...")``.

    ``factory(config, **context)`` returns a :class:`polyalign.core.loss.Loss` with
    ``forward(embeddings, present) -> LossOutput`` and a scoring rule, ``score_tuples(queries,
    candidates)`` (``candidates`` a dict of one or more modalities; ``score(queries, candidates,
    target)`` for one modality follows from it; docs/losses.md).
    Context arguments the factory may accept: ``modalities`` (names), ``embed_dim`` and
    ``batch_size`` (the rows one loss call contrasts: ``train.batch_size``, times ``accumulate``
    when ``negatives: window`` spans the micro-batches of a step).
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register dataset plugins: ``register(name, factory, config=Model, help="...")``.

    ``factory(config, **context)`` returns a :class:`polyalign.core.data.Dataset`: an object
    with ``modalities`` (names), ``root`` (folder relative paths resolve against, or None) and
    ``split(name)`` for ``train``, ``val`` and ``test``: a list of samples, or, for data too large
    to hold, a :class:`polyalign.core.stream.StreamSplit` (shards with their sizes and a reader;
    the core splits them over processes and workers). A sample is a dict ``modality -> raw value``
    (a file as a ``pathlib.Path`` or :class:`~polyalign.core.encoder.FileBytes`, text as a ``str``,
    numbers) with missing modalities absent, plus optional ``label`` and ``id``; a key that is
    neither a modality nor these is ignored, and a modality that no row of a split provides is an error before training
    (``polyalign.testing.check_dataset`` checks all of this).
    The object may also have ``on_error`` (``"raise"`` or ``"skip"``: what to do with a row
    whose value fails to load), ``locate(split, index) -> str`` (where a row comes from,
    e.g. ``manifest data/train.jsonl, line 7``, used in error messages) and ``label_names``
    (a list: the name of class ``k`` for samples with ``label: k``, used by zero-shot
    classification prompts).
    Context argument the factory may accept: ``seed`` (the recipe's seed).
    """


@hookspec
def register_evaluators(register: Register) -> None:
    """Register evaluator plugins: ``register(name, factory, config=Model, help="...")``.

    ``factory(config)`` returns a callable taking a :class:`polyalign.core.evaluator.EvalContext`
    and returning rows ``{"task", "target", "query", "metric", "value"}`` (``query`` is a
    sorted list of modality names, ``target`` a modality, modalities joined by ``+`` or a name
    such as ``class``; ``ci_low``/``ci_high`` and keys telling rows apart, such as ``rate``, may be
    added; docs/writing-a-plugin.md specifies them and ``polyalign.testing.check_evaluator``
    checks them).
    """


@hookspec
def register_loggers(register: Register) -> None:
    """Register logger plugins: ``register(name, factory, config=Model, help="...")``.

    ``factory(config, run_dir)`` returns an object with any of the event-hook methods
    (``on_train_start``, ``on_step_end``, ``on_epoch_end``, ``on_eval_end``, ``on_train_end``,
    ``on_train_error``); the recipe's ``logging`` list chooses which loggers a run uses, by name
    or as a node ``{plugin: NAME, ...options}`` whose options ``config`` validates.
    """


@hookspec
def on_train_start(run_dir: Any, recipe: Any, model: Any, loss: Any, start_step: int,
                   start_epoch: int) -> None:
    """Called before the first step on the main process. After a resume ``start_step`` and
    ``start_epoch`` (epochs done) say where the checkpoint was; a logger should forget what it
    logged past them."""


@hookspec
def on_step_end(step: int, epoch: int, metrics: dict, run_dir: Any) -> None:
    """Called after each logged optimizer step with ``metrics`` (floats) on the main process;
    ``epoch`` is the epoch the step belongs to, counted from 1 (the number its ``on_epoch_end`` gets)."""


@hookspec
def on_epoch_end(epoch: int, step: int, metrics: dict, run_dir: Any) -> None:
    """Called after each epoch (``epoch`` = epochs done, so the first is 1) with ``train_loss``/``val_loss``."""


@hookspec
def on_eval_end(rows: list, run_dir: Any, split: str) -> None:
    """Called with the evaluator rows after evaluation of ``split`` on the main process."""


@hookspec
def on_train_end(run_dir: Any, metrics: dict) -> None:
    """Called once after training and evaluation finished on the main process."""


@hookspec
def on_train_error(run_dir: Any, error: BaseException) -> None:
    """Called on the main process when training or evaluation stopped with ``error`` (which is
    raised again afterwards; the run can be resumed). A logger holding a connection or an open
    tracked run should flush and close it, marked as failed."""
