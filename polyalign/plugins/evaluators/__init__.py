"""Built-in evaluator plugins."""

from polyalign.core.hookspecs import hookimpl


@hookimpl
def register_evaluators(register):
    from .zero_shot import ZeroShotConfig, ZeroShot

    register("zero_shot", ZeroShot, config=ZeroShotConfig,
             help="Predict a target modality from query modalities among candidates; top-k accuracy and MRR")
