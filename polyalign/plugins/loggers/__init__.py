"""Built-in logger plugins (chosen by the recipe's ``logging`` list)."""

from polyalign.core.hookspecs import hookimpl


@hookimpl
def register_loggers(register):
    from .csv_file import CsvLogger
    from .jsonl import JsonlLogger
    from .tensorboard_events import TensorBoardLogger

    register("jsonl", JsonlLogger, help="metrics.jsonl in the run directory: one JSON object per logged step and epoch")
    register("csv", CsvLogger, help="metrics.csv in the run directory: a row per logged step and epoch, a column per metric")
    register("tensorboard", TensorBoardLogger,
             help="TensorBoard event files in <run>/tensorboard (needs `pip install tensorboard`); "
                  "view with `tensorboard --logdir runs/`")
