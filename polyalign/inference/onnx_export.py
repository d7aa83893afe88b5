"""``polyalign export --format onnx``: one ONNX graph per modality, encoder + head + normalisation.

Each graph maps the collated input an encoder's ``forward`` takes (what its ``load`` and
``collate`` make of files and text) to ``(batch, embed_dim)`` embeddings, with a variable batch
axis. Reading and decoding files, tokenising, resampling, cropping and scaling stay outside the
graph, in the encoder's ``load``. The export is checked: onnxruntime runs each graph on a batch of
another size and must reproduce polyalign's own embeddings.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from polyalign.core.encoder import Input
from polyalign.core.errors import PolyalignError
from polyalign.core.model import MultiModalModel

from .trained import TrainedModel

OUTPUT = "embeddings"
TOLERANCE = 1e-4  # largest difference allowed between onnxruntime's embeddings and polyalign's
SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class OnnxGraph:
    """One exported modality: its file, its inputs ``(name, shape, dtype)`` and the difference
    between onnxruntime's embeddings and polyalign's measured after export."""

    modality: str
    file: str
    inputs: list[tuple[str, list[int | str], str]]
    max_difference: float


class ModalityTower(nn.Module):
    """``model.encode(modality, x)`` with the input as positional tensors (``keys`` name a dict's)."""

    def __init__(self, model: MultiModalModel, modality: str, keys: list[str] | None):
        super().__init__()
        self.model, self.modality, self.keys = model, modality, keys

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        x = dict(zip(self.keys, inputs)) if self.keys is not None else inputs[0]
        return self.model.encode(self.modality, x)


def _runtime() -> Any:
    """onnxruntime, after checking the exporter's own dependency is there."""
    try:
        import onnxruntime
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError as exc:
        raise PolyalignError(f"ONNX export needs onnxscript and onnxruntime ({exc}); install them with "
                             f"`pip install 'polyalign[onnx]'`") from None
    return onnxruntime


def _named(example: Input) -> tuple[list[str], list[torch.Tensor]]:
    if isinstance(example, dict):
        return list(example), list(example.values())
    return ["input"], [example]


def _example(model: TrainedModel, modality: str, batch: int) -> Input:
    encoder = model.model.encoders[modality]
    example = encoder.export_example(batch)
    if example is None:
        plugin = model.recipe.modalities[modality].encoder.plugin
        raise PolyalignError(f"modality {modality!r}: encoder {plugin!r} cannot be exported to ONNX (it gives no "
                             f"example input: Encoder.export_example returns None). Export without "
                             f"--format onnx, or implement export_example in the encoder plugin.")
    return example


def export_graph(model: TrainedModel, modality: str, dest: Path, weights_sha256: str) -> OnnxGraph:
    """Write ``dest/<modality>.onnx`` and check it against the model with onnxruntime;
    ``weights_sha256`` names the exported weights the graph was made from (in its metadata)."""
    runtime = _runtime()
    if not SAFE_NAME.match(modality):
        raise PolyalignError(f"modality {modality!r} cannot name a file; rename it in the recipe (letters, "
                             f"digits, '_', '-', '.') to export it to ONNX")
    encoder = model.model.encoders[modality]
    example = _example(model, modality, 2)
    names, tensors = _named(example)
    dims: dict[str, torch.export.Dim] = {"batch": torch.export.Dim("batch", min=1)}
    shapes = tuple({0: dims["batch"], **{axis: dims.setdefault(dim, torch.export.Dim(dim, min=1))
                                         for axis, dim in encoder.export_axes.get(name, {}).items()}}
                   for name in names)
    tower = ModalityTower(model.model, modality, names if isinstance(example, dict) else None)
    path = dest / f"{modality}.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(tower.eval(), tuple(tensors), dynamo=True, input_names=names,
                                        output_names=[OUTPUT], dynamic_shapes=(shapes,), verbose=False)
        except Exception as exc:  # the exporter's errors are long; the first line says what failed
            raise PolyalignError(f"modality {modality!r}: torch could not export the encoder "
                                 f"{type(encoder).__name__} to ONNX: {str(exc).strip().splitlines()[0]}") from exc
    program.model.metadata_props.update({
        "polyalign.modality": modality, "polyalign.model": model.recipe.name,
        "polyalign.encoder": model.recipe.modalities[modality].encoder.plugin,
        "polyalign.embed_dim": str(model.embed_dim), "polyalign.normalize": model.recipe.model.normalize,
        "polyalign.weights_sha256": weights_sha256})
    program.save(str(path))
    check = _example(model, modality, 3)  # another batch size (and token length) than the export's
    with torch.no_grad():
        expected = model.model.encode(modality, check).numpy()
    session = runtime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run([OUTPUT], {n: t.numpy() for n, t in zip(*_named(check))})[0]
    difference = float(np.abs(got - expected).max())
    if not difference <= TOLERANCE:
        path.unlink()
        raise PolyalignError(f"modality {modality!r}: the ONNX graph's embeddings differ from polyalign's by "
                             f"{difference:.2e} (more than {TOLERANCE:g}); it was not written")
    inputs = [(i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim],
               _dtype_name(i.type.tensor_type.elem_type)) for i in _onnx_inputs(path)]
    return OnnxGraph(modality, path.name, inputs, difference)


def _onnx_inputs(path: Path) -> list[Any]:
    import onnx

    return list(onnx.load(str(path), load_external_data=False).graph.input)


def _dtype_name(elem_type: int) -> str:
    import onnx

    return onnx.TensorProto.DataType.Name(elem_type).lower()


def export_onnx(model: TrainedModel, dest: Path, weights_sha256: str) -> list[OnnxGraph]:
    """Export every modality of ``model`` (on the CPU, in eval mode) into ``dest``."""
    return [export_graph(model, m, Path(dest), weights_sha256) for m in model.modalities]
