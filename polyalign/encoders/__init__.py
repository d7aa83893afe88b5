"""Built-in encoder plugins, registered through the same hook as third-party ones."""

from polyalign.core.hookspecs import hookimpl


@hookimpl
def register_encoders(register):
    from .vector import VectorConfig, build_vector

    register("vector", build_vector, config=VectorConfig,
             help="MLP over fixed-size float vectors (lists, arrays or .npy files); hidden: [] = one linear layer")
