"""Built-in dataset plugins."""

from polyalign.plugin import hookimpl


@hookimpl
def register_datasets(register):
    from .demo import DemoDataset
    from .digit_views import DigitViewsDataset
    from .manifest import ManifestDataset
    from .webdataset import WebDataset
    from .xor import XorDataset

    for dataset in (XorDataset, DigitViewsDataset, ManifestDataset, DemoDataset, WebDataset):
        register(dataset)
