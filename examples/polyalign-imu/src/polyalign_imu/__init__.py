"""polyalign-imu: an accelerometer encoder for polyalign, with a loss, a dataset and an evaluator."""

from polyalign.plugin import hookimpl


@hookimpl
def register_encoders(register):
    """Called once by polyalign when it loads plugins."""
    from .encoder import ImuEncoder

    register(ImuEncoder)


@hookimpl
def register_losses(register):
    from .loss import MarginClipLoss

    register(MarginClipLoss)


@hookimpl
def register_datasets(register):
    from .dataset import TupleFolders

    register(TupleFolders)


@hookimpl
def register_evaluators(register):
    from .evaluator import ModalityGap

    register(ModalityGap)
