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
"""

from __future__ import annotations

from polyalign.core.batch import Batch
from polyalign.core.buffers import kept_buffers
from polyalign.core.data import SPLITS, DataError, Sample
from polyalign.core.encoder import FILE_VALUES, Encoder, FileBytes, Input, pad_with_mask, resolve_file
from polyalign.core.errors import Notice, PluginError, PolyalignError, not_a_file, shown
from polyalign.core.evaluator import (
    EvalContext,
    eval_tag,
    per_query_metrics,
    ranks_of_correct,
    recall_and_rank,
    retrieval_metrics,
    row_columns,
    value_key,
)
from polyalign.core.hookspecs import hookimpl
from polyalign.core.layer_groups import Part, named_layer_groups
from polyalign.core.loss import (
    MAX_LOGIT_SCALE,
    MIN_LOGIT_SCALE,
    Loss,
    LossConfig,
    LossOutput,
    Metric,
    Temperature,
    can_rank_tuples,
    full_present,
)
from polyalign.core.memory import MemoryNeed
from polyalign.core.step_cost import ENTRY_FLOPS, contrast_flops
from polyalign.core.stream import Shard, StreamSplit
from polyalign.files.atomic import RESUME, WriteError, atomic_write_text, describe_os_error
from polyalign.files.cache_dir import cache_root
from polyalign.files.json_file import JsonError, parse_json, read_json
from polyalign.files.manifest_file import RESERVED_KEYS, SUFFIXES, ManifestError, parse_label, read_manifest, with_files
from polyalign.files.npy_file import read_npy
from polyalign.files.run_files import METRICS_FILE, REPORT_DIR, logged_before, read_tracker_run
from polyalign.files.weights import load_failure, torch_load_safely
from polyalign.testing import ConformanceError, check_dataset, check_encoder, check_evaluator, check_loss

__all__ = [
    "hookimpl",
    # Encoders: the base class, one loaded input, file values and padding
    "Encoder", "Input", "FileBytes", "FILE_VALUES", "resolve_file", "pad_with_mask", "named_layer_groups", "Part",
    "kept_buffers",
    # Losses: the base class, its options, temperature and output, helpers for scoring and cost
    "Loss", "LossConfig", "LossOutput", "Metric", "Temperature", "MIN_LOGIT_SCALE", "MAX_LOGIT_SCALE", "full_present",
    "can_rank_tuples", "contrast_flops", "ENTRY_FLOPS", "MemoryNeed",
    # Datasets: samples, batches, splits and streamed shards
    "Sample", "SPLITS", "Batch", "StreamSplit", "Shard",
    # Evaluators: what they are given, and the metric helpers the built-ins use
    "EvalContext", "ranks_of_correct", "per_query_metrics", "retrieval_metrics", "recall_and_rank", "value_key",
    # Loggers: run-file names, evaluation rows as columns and tags
    "METRICS_FILE", "REPORT_DIR", "logged_before", "read_tracker_run", "row_columns", "eval_tag",
    # Files: reading and writing safely
    "read_json", "parse_json", "JsonError", "read_npy", "read_manifest", "with_files", "parse_label", "ManifestError",
    "RESERVED_KEYS", "SUFFIXES", "atomic_write_text", "describe_os_error", "WriteError", "RESUME", "cache_root",
    "torch_load_safely", "load_failure",
    # Errors and warnings
    "PolyalignError", "PluginError", "DataError", "Notice", "shown", "not_a_file",
    # Conformance checks for a plugin's tests
    "check_encoder", "check_loss", "check_dataset", "check_evaluator", "ConformanceError",
]
