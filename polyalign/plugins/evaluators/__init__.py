"""Built-in evaluator plugins."""

from polyalign.core.hookspecs import hookimpl


@hookimpl
def register_evaluators(register):
    from .missing_modality import MissingModalityConfig, build_missing_modality
    from .retrieval import RetrievalConfig, build_retrieval
    from .zero_shot import ZeroShot, ZeroShotConfig

    register("zero_shot", ZeroShot, config=ZeroShotConfig,
             help="Predict a target modality from query modalities among candidates; top-k accuracy and MRR")
    register("missing_modality", build_missing_modality, config=MissingModalityConfig,
             help="Zero-shot scores from every subset of query modalities, and test-time dropout curves "
                  "with bootstrap intervals")
    register("retrieval", build_retrieval, config=RetrievalConfig,
             help="Recall@1/5/10, median and mean rank in both directions, between modalities or tuples of them")
