"""Built-in dataset plugins."""

from polyalign.core.hookspecs import hookimpl


@hookimpl
def register_datasets(register):
    from .xor import XorConfig, build_xor

    register("xor", build_xor, config=XorConfig,
             help="Symile paper's binary XOR: c = a XOR b with probability p_hat, else c = a (3 modalities)")
