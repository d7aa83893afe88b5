"""Built-in evaluator plugins."""

from polyalign.plugin import hookimpl


@hookimpl
def register_evaluators(register):
    from .embedding_geometry import EmbeddingGeometry
    from .linear_probe import LinearProbe
    from .missing_modality import MissingModality
    from .retrieval import Retrieval
    from .zero_shot import ZeroShot
    from .zero_shot_classification import ZeroShotClassification

    for evaluator in (ZeroShot, MissingModality, Retrieval, ZeroShotClassification, LinearProbe,
                      EmbeddingGeometry):
        register(evaluator)
