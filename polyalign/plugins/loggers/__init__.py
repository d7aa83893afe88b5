"""Built-in logger plugins (chosen by the recipe's ``logging`` list)."""

from polyalign.core.hookspecs import hookimpl


@hookimpl
def register_loggers(register):
    from .csv_file import CsvLogger
    from .jsonl import JsonlLogger
    from .mlflow_tracking import MlflowConfig, MlflowLogger
    from .tensorboard_events import TensorBoardLogger
    from .wandb_tracking import WandbConfig, WandbLogger

    register("jsonl", JsonlLogger, help="metrics.jsonl in the run directory: one JSON object per logged step and epoch")
    register("csv", CsvLogger,
             help="metrics.csv in the run directory: a row per logged step and epoch, a column per metric")
    register("tensorboard", TensorBoardLogger, requires={"tensorboard": "polyalign[tensorboard]"},
             help="TensorBoard event files in <run>/tensorboard (needs `pip install tensorboard`); "
                  "view with `tensorboard --logdir runs/`")
    register("wandb", WandbLogger, config=WandbConfig, requires={"wandb": "polyalign[wandb]"},
             help="a Weights & Biases run, online or offline (needs `pip install 'polyalign[wandb]'`); "
                  "a resume continues it")
    register("mlflow", MlflowLogger, config=MlflowConfig, requires={"mlflow": "polyalign[mlflow]"},
             help="an MLflow run in a tracking store, e.g. tracking_uri: sqlite:///mlflow.db (needs "
                  "`pip install 'polyalign[mlflow]'`); a resume continues it")
