"""Every hook a polyalign plugin can implement (the guide: docs/writing-a-plugin.md).

Hooks are called with keyword arguments only; an implementation may accept fewer arguments than the spec.
A ``register_*`` hook calls ``register(cls)`` once per component class. The class carries ``name`` (what recipes
use), ``Options`` (a pydantic model of its options; none = no options), its description (the first paragraph
of its docstring) and ``requires`` (module -> what to pip install; or a classmethod ``requires_for(options)``
where they depend on the options). polyalign builds it as ``cls(options, **context)``, passing only the context
arguments its ``__init__`` names, from those its kind lists below (``registry.CONTEXT``).

An options model is validated with every recipe. Its validators may read ``info.context`` (``None`` outside a
recipe): the recipe's ``modalities``, ``embed_dim`` and ``batch_size``, the rows one loss call contrasts
(:meth:`polyalign.core.recipe_schema.Recipe.plugin_context`, the same arguments a loss gets), to refuse options
that cannot work with them. Whether a recipe is valid never depends on the machine: options that know the memory
they need before any step say so in a ``memory_need(context)`` method returning a
:class:`polyalign.core.memory.MemoryNeed` (or None), and the fit check (:mod:`polyalign.core.machine_fit`)
weighs it against this machine when ``polyalign validate`` and ``train`` run.
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("polyalign")
hookimpl = pluggy.HookimplMarker("polyalign")

Register = Callable[[type], None]


@hookspec
def register_encoders(register: Register) -> None:
    """Register encoder classes (:class:`polyalign.plugin.Encoder`): ``register(MyEncoder)``; context: ``modality``,
    ``example``, ``root``."""


@hookspec
def register_losses(register: Register) -> None:
    """Register loss classes (:class:`polyalign.plugin.Loss`): ``register(MyLoss)``; context: ``modalities``,
    ``embed_dim``, ``batch_size``."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register dataset classes (``modalities``, ``root``, ``split(name)``): ``register(MyData)``; context: ``seed``."""


@hookspec
def register_evaluators(register: Register) -> None:
    """Register evaluator classes (called with an :class:`polyalign.plugin.EvalContext`, returning rows):
    ``register(MyEvaluator)``."""


@hookspec
def register_loggers(register: Register) -> None:
    """Register logger classes (with any of the ``on_*`` event methods): ``register(MyLogger)``; context:
    ``run_dir``."""


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
