"""Built-in encoder plugins, registered through the same hook as third-party ones."""

from polyalign.plugin import hookimpl


@hookimpl
def register_encoders(register):
    from .audio import AudioEncoder
    from .byte_text import ByteTextEncoder
    from .ecg import EcgEncoder
    from .image import ImageEncoder
    from .open_clip import OpenClipEncoder
    from .tabular import TabularEncoder
    from .text import TextEncoder
    from .vector import VectorEncoder

    for encoder in (VectorEncoder, ImageEncoder, OpenClipEncoder, TextEncoder, ByteTextEncoder, AudioEncoder,
                    EcgEncoder, TabularEncoder):
        register(encoder)
