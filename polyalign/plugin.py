"""Everything a polyalign plugin needs, in one place: ``from polyalign.plugin import Loss, hookimpl, ...``.

A plugin is a class per component, registered from a hook::

    from polyalign.plugin import Loss, LossConfig, hookimpl

    class MyLoss(Loss):
        \"\"\"One line: what ``polyalign plugins`` shows.\"\"\"

        name = "my_loss"
        Options = LossConfig

    @hookimpl
    def register_losses(register):
        register(MyLoss)

The class carries its ``name``, its ``Options`` (a pydantic model; none = no options), its description (the
first paragraph of its docstring) and ``requires`` (module -> what to pip install; a classmethod
``requires_for(options)`` returns them when they depend on the options). polyalign builds it as
``MyLoss(options, **context)`` with the context arguments its ``__init__`` names (docs/writing-a-plugin.md).

Stability: in 0.x, every name in ``__all__`` below and every hook of ``polyalign.core.hookspecs`` is stable:
it keeps its name and meaning, and a change that could break a plugin is announced first, by a
``DeprecationWarning`` for at least one minor release and a line in the changelog (docs/writing-a-plugin.md,
"Stability"). Anything else of polyalign (``polyalign.core``, ``polyalign.files``, ...) is internal and may change in
any release; import it through this module, or ask for it to be added here.

The names load on first use, so that ``import polyalign.plugin`` (and a plugin's ``@hookimpl``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from polyalign.core.hookspecs import hookimpl

# name -> the module that defines it (one line each, grouped as in __all__)
_HOME = {
    # Encoders: the base class, one loaded input, file values and padding
    "Encoder": "polyalign.core.encoder",
    "Input": "polyalign.core.encoder",
    "FileBytes": "polyalign.core.encoder",
    "FILE_VALUES": "polyalign.core.encoder",
    "resolve_file": "polyalign.core.encoder",
    "pad_with_mask": "polyalign.core.encoder",
    "named_layer_groups": "polyalign.core.layer_groups",
    "Part": "polyalign.core.layer_groups",
    "kept_buffers": "polyalign.core.buffers",
    # Losses: the base class, its options, temperature and output, helpers for scoring and cost
    "Loss": "polyalign.core.loss",
    "LossConfig": "polyalign.core.loss",
    "LossOutput": "polyalign.core.loss",
    "Metric": "polyalign.core.loss",
    "Temperature": "polyalign.core.loss",
    "MIN_LOGIT_SCALE": "polyalign.core.loss",
    "MAX_LOGIT_SCALE": "polyalign.core.loss",
    "full_present": "polyalign.core.loss",
    "can_rank_tuples": "polyalign.core.loss",
    "contrast_flops": "polyalign.core.step_cost",
    "ENTRY_FLOPS": "polyalign.core.step_cost",
    "memory_problem": "polyalign.core.memory",
    # Datasets: samples, batches, splits and streamed shards
    "Sample": "polyalign.core.data",
    "SPLITS": "polyalign.core.data",
    "Batch": "polyalign.core.batch",
    "StreamSplit": "polyalign.core.stream",
    "Shard": "polyalign.core.stream",
    # Evaluators: what they are given, and the metric helpers the built-ins use
    "EvalContext": "polyalign.core.evaluator",
    "ranks_of_correct": "polyalign.core.evaluator",
    "per_query_metrics": "polyalign.core.evaluator",
    "retrieval_metrics": "polyalign.core.evaluator",
    "recall_and_rank": "polyalign.core.evaluator",
    "value_key": "polyalign.core.evaluator",
    # Loggers: run-file names, evaluation rows as columns and tags
    "METRICS_FILE": "polyalign.files.run_files",
    "REPORT_DIR": "polyalign.files.run_files",
    "logged_before": "polyalign.files.run_files",
    "read_tracker_run": "polyalign.files.run_files",
    "row_columns": "polyalign.core.evaluator",
    "eval_tag": "polyalign.core.evaluator",
    # Files: reading and writing safely
    "read_json": "polyalign.files.json_file",
    "parse_json": "polyalign.files.json_file",
    "JsonError": "polyalign.files.json_file",
    "read_npy": "polyalign.files.npy_file",
    "read_manifest": "polyalign.files.manifest_file",
    "parse_label": "polyalign.files.manifest_file",
    "ManifestError": "polyalign.files.manifest_file",
    "RESERVED_KEYS": "polyalign.files.manifest_file",
    "SUFFIXES": "polyalign.files.manifest_file",
    "atomic_write_text": "polyalign.files.atomic",
    "describe_os_error": "polyalign.files.atomic",
    "WriteError": "polyalign.files.atomic",
    "RESUME": "polyalign.files.atomic",
    "cache_root": "polyalign.files.cache_dir",
    "torch_load_safely": "polyalign.files.weights",
    "load_failure": "polyalign.files.weights",
    # Errors and warnings
    "PolyalignError": "polyalign.core.errors",
    "PluginError": "polyalign.core.errors",
    "DataError": "polyalign.core.data",
    "Notice": "polyalign.core.errors",
    "shown": "polyalign.core.errors",
    # Conformance checks for a plugin's tests
    "check_encoder": "polyalign.testing",
    "check_loss": "polyalign.testing",
    "check_dataset": "polyalign.testing",
    "check_evaluator": "polyalign.testing",
    "ConformanceError": "polyalign.testing",
}

__all__ = ["hookimpl", *_HOME]

if TYPE_CHECKING:
    pass


def __getattr__(name: str) -> Any:
    """A public name, imported from its module when first asked for."""
    if name not in _HOME:
        raise AttributeError(f"module 'polyalign.plugin' has no attribute {name!r}; the plugin API is: "
                             f"{', '.join(__all__)}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
