"""Built-in logger plugins (chosen by the recipe's ``logging`` list)."""

from polyalign.core.hookspecs import hookimpl


@hookimpl
def register_loggers(register):
    from .jsonl import JsonlLogger

    register("jsonl", JsonlLogger, help="metrics.jsonl in the run directory: one JSON object per logged step and epoch")
