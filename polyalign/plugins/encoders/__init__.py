"""Built-in encoder plugins, registered through the same hook as third-party ones."""

from polyalign.core.hookspecs import hookimpl


@hookimpl
def register_encoders(register):
    from .audio import AudioConfig, build_audio
    from .byte_text import ByteTextConfig, build_byte_text
    from .ecg import EcgConfig, build_ecg
    from .image import ImageConfig, build_image
    from .open_clip import OpenClipConfig, build_open_clip
    from .tabular import TabularConfig, build_tabular
    from .text import TextConfig, build_text
    from .vector import VectorConfig, build_vector

    register("vector", build_vector, config=VectorConfig,
             help="MLP over fixed-size float vectors (lists, arrays or .npy files); hidden: [] = one linear layer")
    register("image", build_image, config=ImageConfig,
             help="Any timm model over PNG/JPEG files; pretrained: false or a local .safetensors/.pth file")
    register("open_clip", build_open_clip, config=OpenClipConfig, requires={"open_clip": "polyalign[open_clip]"},
             help="The image or text tower of an open_clip model (ViT-B-32, ... or a local folder); local weights only")
    register("text", build_text, config=TextConfig,
             help="Local Hugging Face model (AutoModel + AutoTokenizer, offline) over text; mean or cls pooling")
    register("byte_text", build_byte_text, config=ByteTextConfig,
             help="Small transformer over UTF-8 bytes; no tokenizer, no download")
    register("audio", build_audio, config=AudioConfig,
             help="WAV/FLAC clips (soundfile, resampled, cropped/padded) into a log-mel CNN or wav2vec2")
    register("ecg", build_ecg, config=EcgConfig,
             help="Multi-lead ECG from .npy or WFDB records, standardised per lead, into a 1-D ResNet-18")
    register("tabular", build_tabular, config=TabularConfig,
             help="Numeric rows with missing entries: value + missingness bit per column into an MLP")
