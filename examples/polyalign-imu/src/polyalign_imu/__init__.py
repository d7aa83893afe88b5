"""polyalign-imu: an accelerometer encoder for polyalign, with a loss, a dataset and an evaluator."""

from polyalign import hookimpl


@hookimpl
def register_encoders(register):
    """Called once by polyalign when it loads plugins."""
    from .encoder import ImuConfig, build_imu

    register("imu", build_imu, config=ImuConfig,
             help="Accelerometer recordings (.csv or .npy, samples x axes) into a 1-D CNN")


@hookimpl
def register_losses(register):
    from .loss import MarginClipConfig, build_margin_clip

    register("margin_clip", build_margin_clip, config=MarginClipConfig,
             help="Pairwise InfoNCE with an additive margin on the positives (AM-softmax style)")


@hookimpl
def register_datasets(register):
    from .dataset import TupleFoldersConfig, build_tuple_folders

    register("tuple_folders", build_tuple_folders, config=TupleFoldersConfig,
             help="One folder per tuple, one file per modality (imu.csv, caption.txt, ...), in train/val/test")


@hookimpl
def register_evaluators(register):
    from .evaluator import ModalityGap, ModalityGapConfig

    register("modality_gap", ModalityGap, config=ModalityGapConfig,
             help="Distance between the centres of two modalities' embeddings (the modality gap)")
