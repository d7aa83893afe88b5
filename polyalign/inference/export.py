"""``polyalign export``: a self-contained folder with weights, resolved recipe and model card."""

from __future__ import annotations

import os
import shutil
from importlib.metadata import version
from pathlib import Path
from typing import Any

import yaml

from polyalign.core.assemble import with_rebuild_options
from polyalign.core.errors import PluginError, PolyalignError
from polyalign.core.evaluator import read_report, report_sections
from polyalign.core.plugin_manager import Plugins, default_plugins
from polyalign.files.atomic import WriteError, atomic_write_text, save_tensors, write_failure
from polyalign.files.run_files import RECIPE_FILE, REPORT_DIR, REPORT_JSON
from polyalign.files.weights import WEIGHTS, CheckpointError, load_state

from .model_card import CARD_FILE, requirements
from .onnx_export import OUTPUT, TOLERANCE, OnnxGraph, export_onnx
from .trained import TrainedModel, build_parts, file_sha256, load

FORMATS = ("safetensors", "onnx")


def _progress(weights_file: Path) -> dict[str, int]:
    """Step and epoch of the checkpoint holding ``weights_file`` (empty if it has no state)."""
    try:
        state = load_state(weights_file.parent)
    except CheckpointError:
        return {}
    return {"step": int(state["step"]), "epoch": int(state["epoch"])}


def onnx_section(model: TrainedModel, graphs: list[OnnxGraph]) -> list[str]:
    """The model card's lines on the ONNX graphs: files, inputs, what happens outside them."""
    lines = ["## ONNX", "",
             f"One graph per modality: the encoder, its head to {model.embed_dim} dimensions and the "
             f"normalisation ({model.recipe.model.normalize}); output `{OUTPUT}` (batch, {model.embed_dim}); "
             f"every input's first axis is the batch. The inputs are what the encoder's `load` and `collate` "
             f"make of raw values: reading and decoding files, tokenising, resampling, cropping and scaling "
             f"happen there, outside the graph. onnxruntime reproduced polyalign's embeddings on export "
             f"(largest difference shown; at most {TOLERANCE:g} is accepted).", "",
             "| modality | file | inputs | largest difference |", "|---|---|---|---|"]
    for g in graphs:
        inputs = ", ".join(f"`{name}` {dtype} ({', '.join(map(str, shape))})" for name, shape, dtype in g.inputs)
        lines.append(f"| {g.modality} | `{g.file}` | {inputs} | {g.max_difference:.1e} |")
    m = model.modalities[0]
    lines += ["", "```python", "import onnxruntime, polyalign", "",
              "model = polyalign.load(\"path/to/this/folder\")",
              f"encoder = model.model.encoders[\"{m}\"]",
              "values, root = [...], None   # raw values as for model.embed; root: the folder paths are relative to",
              "x = encoder.collate([encoder.load(value, root) for value in values])   # outside the graph",
              f"session = onnxruntime.InferenceSession(\"path/to/this/folder/{graphs[0].file}\")",
              "feeds = {k: v.numpy() for k, v in x.items()} if isinstance(x, dict) else {\"input\": x.numpy()}",
              f"z = session.run([\"{OUTPUT}\"], feeds)[0]", "```", ""]
    return lines


def card_markdown(model: TrainedModel, header: dict[str, Any], rows: list[dict[str, Any]],
                  graphs: list[OnnxGraph] | None = None) -> str:
    """The model card: a YAML header ``polyalign.load`` checks, then a page for people."""
    recipe = model.recipe
    losses = " + ".join(f"{n.weight:g} × {n.plugin}" if len(recipe.losses) > 1 else n.plugin
                        for n in recipe.losses)
    trained = f"step {header['step']}, epoch {header['epoch']}" if "step" in header else "unknown step"
    lines = ["---", yaml.safe_dump(header, sort_keys=False).rstrip(), "---", "",
             f"# {recipe.name}", ""]
    if recipe.description:
        lines += [recipe.description, ""]
    lines += [f"Exported by polyalign {header['polyalign_version']} from run `{header['source_run']}`, "
              f"checkpoint `{header['checkpoint']}` ({trained}). Weights: `{WEIGHTS}` (safetensors, "
              f"SHA-256 `{header['weights_sha256'][:16]}…`); the resolved training recipe: `{RECIPE_FILE}`.", ""]
    if header["merged"]:
        lines += [f"Training-only structure (LoRA adapters) of {', '.join(header['merged'])} is merged into these "
                  f"weights: loading them needs no adapter library.", ""]
    lines += ["## Model", "", "| modality | encoder | encoder output width | embedding size |", "|---|---|---|---|"]
    for m, encoder in model.model.encoders.items():
        lines.append(f"| {m} | {recipe.modalities[m].encoder.plugin} | {encoder.width} | {model.embed_dim} |")
    lines += ["", f"Normalisation: {recipe.model.normalize}; missing modalities: {recipe.missing.strategy}. "
              f"Loss and scoring rule: {losses} (`{type(model.loss).__name__}.score`). "
              f"Trained on the `{recipe.data.plugin}` dataset.", ""]
    lines += ["## Evaluation", "",
              f"From the run's `{REPORT_DIR}/{REPORT_JSON}` (the test split, measured when the run was "
              f"evaluated): a section per evaluator."] + (report_sections(rows, "###") if rows
                                                          else ["", "The run has no evaluation report."])
    lines += ["", "## Plugins this model needs", "",
              "| kind | name | plugin | distribution | version |", "|---|---|---|---|---|"]
    lines += [f"| {r['kind']} | {r['name']} | {r['plugin']} | {r['distribution']} | {r['version']} |"
              for r in header["requires"]]
    lines += ["", "`polyalign.load` refuses this folder, naming them, when one of these is not installed.",
              "", "## Use", "", "```python", "import polyalign", "",
              "model = polyalign.load(\"path/to/this/folder\")",
              f"z = model.embed({{\"{model.modalities[0]}\": [...]}})   # raw values: Paths, text, numbers",
              f"hits = model.search({{\"{model.modalities[0]}\": [...]}}, "
              f"{{\"{model.modalities[-1]}\": [...]}}, top_k=5)",
              "```", ""]
    if graphs:
        lines += onnx_section(model, graphs)
    return "\n".join(lines)


def export_model(run_dir: str | Path, dest: str | Path, checkpoint: str = "last",
                 plugins: Plugins | None = None, format: str = "safetensors") -> Path:
    """Write ``dest``: the checkpoint's weights, the resolved recipe and ``MODEL_CARD.md``; with
    ``format="onnx"`` also one ``<modality>.onnx`` graph per modality. Nothing is left in ``dest``
    when a step fails (the folder is written under a temporary name, then renamed)."""
    if format not in FORMATS:
        raise PolyalignError(f"unknown export format {format!r}; formats: {', '.join(FORMATS)}")
    plugins = plugins or default_plugins()
    run_dir, dest = Path(run_dir), Path(dest).absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise PolyalignError(f"{dest} exists and is not an empty folder; give a new folder to export into")
    model = load(run_dir, checkpoint=checkpoint, device="cpu", plugins=plugins)
    before = model.parts.state_dict().keys()
    changed = {m: encoder.merge_for_export() for m, encoder in model.model.encoders.items()}
    weights = model.parts.state_dict()
    merged = sorted({k.split(".")[2] for k in before ^ weights.keys() if k.startswith("model.encoders.")})
    recipe = with_rebuild_options(model.recipe, model.model, plugins, changed)
    try:
        rebuilt = build_parts(recipe, plugins, allow_data=False)
    except PolyalignError as exc:
        raise PolyalignError(f"cannot export {run_dir}: its model cannot be rebuilt without the training "
                             f"data ({exc}). The encoder that infers this option should return it from "
                             f"rebuild_options().") from exc
    try:
        rebuilt.load_state_dict(weights)
    except PolyalignError as exc:
        raise PluginError(f"cannot export {run_dir}: the weights after the encoders' merge_for_export() do not "
                          f"fit the model the exported recipe builds: {exc}") from exc
    rows = read_report(run_dir / REPORT_DIR / REPORT_JSON, missing_ok=True)
    # written beside ``dest`` and renamed into place: a failed export leaves nothing that blocks the next
    final = dest.resolve()
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    try:
        tmp.mkdir(parents=True)
        if merged:
            save_tensors({k: v.contiguous() for k, v in weights.items()}, tmp / WEIGHTS)
        else:  # the checkpoint's own file: embeddings made by the run still match the export
            shutil.copyfile(model.weights_file, tmp / WEIGHTS)
        header = {"polyalign_version": version("polyalign"), "name": recipe.name,
                  "source_run": run_dir.resolve().name, "checkpoint": model.checkpoint,
                  **_progress(model.weights_file), "modalities": model.modalities,
                  "embed_dim": model.embed_dim, "weights_sha256": file_sha256(tmp / WEIGHTS),
                  "merged": merged, "requires": requirements(recipe, plugins)}
        graphs = export_onnx(model, tmp, header["weights_sha256"]) if format == "onnx" else []
        atomic_write_text(tmp / RECIPE_FILE,
                          f"# exported from {run_dir.resolve().name} (resolved)\n" + recipe.to_yaml())
        atomic_write_text(tmp / CARD_FILE, card_markdown(model, header, rows, graphs))
        if final.is_dir():  # an empty folder given as the destination: move the files in
            for file in tmp.iterdir():
                os.replace(file, final / file.name)
        else:
            os.replace(tmp, final)
    except (OSError, WriteError) as exc:  # named by the export, not by the file copied or the temporary folder
        raise WriteError(f"could not write the export {dest}: {write_failure(exc, 'then export again')}; nothing "
                         f"was left there (the run {run_dir} is unchanged)") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
