"""Built-in loss plugins: one module per objective."""

from polyalign.core.hookspecs import hookimpl


@hookimpl
def register_losses(register):
    from .clip import ClipConfig, build_clip

    register("clip", build_clip, config=ClipConfig,
             help="Pairwise InfoNCE (CLIP/CMC) over all pairs or a star around one anchor; mean over pairs")
