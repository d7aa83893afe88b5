"""Built-in evaluator plugins."""

from polyalign.core.hookspecs import hookimpl


@hookimpl
def register_evaluators(register):
    from .linear_probe import LinearProbeConfig, build_linear_probe
    from .missing_modality import MissingModalityConfig, build_missing_modality
    from .retrieval import RetrievalConfig, build_retrieval
    from .zero_shot import ZeroShot, ZeroShotConfig
    from .zero_shot_classification import ZeroShotClassificationConfig, build_zero_shot_classification

    register("zero_shot", ZeroShot, config=ZeroShotConfig,
             help="Predict a target modality from query modalities among candidates; top-k accuracy and MRR")
    register("missing_modality", build_missing_modality, config=MissingModalityConfig,
             help="Zero-shot scores from every subset of query modalities, and test-time dropout curves "
                  "with bootstrap intervals")
    register("retrieval", build_retrieval, config=RetrievalConfig,
             help="Recall@1/5/10, median and mean rank in both directions, between modalities or tuples of them")
    register("zero_shot_classification", build_zero_shot_classification, config=ZeroShotClassificationConfig,
             help="Classify from any query subset against text prompts of the class names, averaged per class "
                  "(CLIP); top-1/top-5 and per-class accuracy")
    register("linear_probe", build_linear_probe, config=LinearProbeConfig, requires={"sklearn": "polyalign[probe]"},
             help="Logistic regression (scikit-learn) on frozen embeddings of a modality or several; C chosen "
                  "on val; few-shot k per class")
