"""Built-in loss plugins: one module per objective."""

from polyalign.plugin import hookimpl


@hookimpl
def register_losses(register):
    from .align_uniform import AlignUniformLoss
    from .clip import ClipLoss
    from .dcl import DclLoss, DclwLoss
    from .gram import GramLoss
    from .mv_dhel import MvDhelLoss
    from .mv_infonce import MvInfoNceLoss
    from .siglip import SiglipLoss
    from .symile import SymileLoss

    for loss in (ClipLoss, SymileLoss, GramLoss, MvInfoNceLoss, MvDhelLoss, SiglipLoss, DclLoss, DclwLoss,
                 AlignUniformLoss):
        register(loss)
