"""Built-in loss plugins: one module per objective."""

from polyalign.core.hookspecs import hookimpl


@hookimpl
def register_losses(register):
    from .align_uniform import AlignUniformConfig, build_align_uniform
    from .clip import ClipConfig, build_clip
    from .dcl import DclConfig, DclwConfig, build_dcl, build_dclw
    from .gram import GramConfig, build_gram
    from .mv_dhel import MvDhelConfig, build_mv_dhel
    from .mv_infonce import MvInfoNceConfig, build_mv_infonce
    from .siglip import SiglipConfig, build_siglip
    from .symile import SymileConfig, build_symile

    register("clip", build_clip, config=ClipConfig,
             help="Pairwise InfoNCE (CLIP/CMC) over all pairs or a star around one anchor; mean over pairs")
    register("symile", build_symile, config=SymileConfig,
             help="Symile: InfoNCE on the multilinear inner product of all M modalities "
                  "(negatives: auto, n_squared, per_modality, n)")
    register("gram", build_gram, config=GramConfig,
             help="GRAM: symmetric InfoNCE on minus the Gram-matrix volume of an anchor and the other modalities")
    register("mv_infonce", build_mv_infonce, config=MvInfoNceConfig,
             help="Multi-view InfoNCE: all positives of a tuple in one numerator, every other view a negative")
    register("mv_dhel", build_mv_dhel, config=MvDhelConfig,
             help="Multi-view DHEL: within-tuple alignment against per-modality (decoupled) uniformity")
    register("siglip", build_siglip, config=SiglipConfig,
             help="Pairwise sigmoid loss (SigLIP) with a learned scale and bias per modality pair")
    register("dcl", build_dcl, config=DclConfig,
             help="Decoupled contrastive loss (DCL): InfoNCE without the positive in the denominator, "
                  "negatives from both modalities of each pair")
    register("dclw", build_dclw, config=DclwConfig,
             help="DCLW: DCL with the positive terms weighted by a von Mises-Fisher weight (sigma 0.5)")
    register("align_uniform", build_align_uniform, config=AlignUniformConfig,
             help="Alignment + uniformity (Wang & Isola) regulariser, to add with a weight to another loss")
