"""Built-in logger plugins (chosen by the recipe's ``logging`` list)."""

from polyalign.plugin import hookimpl


@hookimpl
def register_loggers(register):
    from .csv_file import CsvLogger
    from .jsonl import JsonlLogger
    from .mlflow_tracking import MlflowLogger
    from .tensorboard_events import TensorBoardLogger
    from .wandb_tracking import WandbLogger

    for logger in (JsonlLogger, CsvLogger, TensorBoardLogger, WandbLogger, MlflowLogger):
        register(logger)
