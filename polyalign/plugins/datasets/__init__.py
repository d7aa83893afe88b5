"""Built-in dataset plugins."""

from polyalign.core.hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    from .demo import DemoConfig, build_demo
    from .digit_views import DigitViewsConfig, build_digit_views
    from .manifest import ManifestConfig, build_manifest
    from .webdataset import WebDatasetConfig, build_webdataset
    from .xor import XorConfig, build_xor

    register("xor", build_xor, config=XorConfig,
             help="Symile paper's binary XOR: c = a XOR b with probability p_hat, else c = a (3 modalities)")
    register("digit_views", build_digit_views, config=DigitViewsConfig, requires={"sklearn": "polyalign[probe]"},
             help="Six feature families (pixels, zones, profiles, gradients, DCT, moments) of scikit-learn's "
                  "bundled 8x8 digits: one modality each, the same 1,797 scans")
    register("manifest", build_manifest, config=ManifestConfig,
             help="JSON Lines or CSV manifests per split: one row per tuple, one column per modality (paths or inline)")
    register("demo", build_demo, config=DemoConfig,
             help="Image + audio + ECG + text files sharing a class, generated into a cache folder on first use")
    register("webdataset", build_webdataset, config=WebDatasetConfig, requires={"webdataset": "polyalign[webdataset]"},
             help="Tuples streamed from tar shards (webdataset format; `polyalign shards` writes them from manifests)")
