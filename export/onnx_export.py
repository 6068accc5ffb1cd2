"""Checkpoint or torch model -> one self-describing ONNX file (contract 2), checked before it is kept."""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import torch

import runtime
from export.errors import ExportError
from export.int8 import Int8Options, Int8Report, quantize_model
from export.parity import measure_parity, parity_inputs
from export.versions import default_opset, stamp_lowest_versions
from runtime.errors import first_line, raises_only
from runtime.formats.files import atomic_path, sha256_file
from runtime.formats.onnx_model import CLASS_MAPS_NAME, INPUT_NAME, OUTPUT_NAMES, ModelInfo
from runtime.inference.compat import DEFAULT_OPSET, OPSETS, required_onnxruntime
from runtime.inputs.image import Preprocess
from runtime.maps.boxes import PAPER_BOX_THRESHOLD
from train.checkpoint import load_checkpoint, model_from_checkpoint
from train.models import class_activation_maps
from train.recipes import recipe_of_checkpoint

OPSET = DEFAULT_OPSET  # runs on every onnxruntime gapcam supports (runtime.inference.compat)


@dataclass
class ExportReport:
    path: Path  # the written .onnx file
    opset: int
    size_bytes: int
    inputs: list[str]  # "name [dims]" for the summary
    outputs: list[str]
    parity: dict  # see export.parity.measure_parity
    int8: Int8Report | None = None  # the INT8 model written beside it, where asked for


def _graph_signature(values) -> list[str]:
    """'name [N, 3, 64, 64]' per graph input or output."""
    rows = []
    for value in values:
        dims = [d.dim_param or str(d.dim_value) for d in value.type.tensor_type.shape.dim]
        rows.append(f"{value.name} [{', '.join(dims)}]")
    return rows


def linear_layer(model: torch.nn.Module) -> torch.nn.Linear:
    """`model.fc`, the linear layer whose weights turn the features into CAMs (a GapCam's or a CamHead's).

    Raises ExportError when the model has no such nn.Linear.
    """
    fc = getattr(model, "fc", None)
    if not isinstance(fc, torch.nn.Linear):
        raise ExportError(f"{type(model).__name__}: expected its linear layer as `model.fc`, an nn.Linear, got {type(fc).__name__}")
    return fc


class WithClassMaps(torch.nn.Module):
    """forward(x) -> (logits, features, cams): every class's raw CAM computed in the graph, from the
    model's own fc layer (`model.fc`), so the graph holds its weight once.

    A client (`CamSession` on a GPU, a Triton client) then fetches [N, num_classes, h, w] instead of
    the features [N, K, h, w]. Added only while num_classes <= K, so that the output is never larger
    than the features it saves copying; wider heads (ImageNet's 1000 classes over K=512) keep two
    outputs and the runtime computes their maps from the features.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, features = self.model(x)
        return logits, features, class_activation_maps(features, linear_layer(self.model).weight)


def to_onnx_proto(model: torch.nn.Module, spec: Preprocess, opset: int = OPSET, class_maps: bool = True) -> onnx.ModelProto:
    """Trace `model` (forward(x) -> (logits, features), its linear layer `model.fc`) with the dynamo
    exporter, batch dynamic; with `class_maps` and num_classes <= K, the graph also outputs the class maps.

    The example batch has 2 images: torch.export specializes a size-1 dimension to a constant.
    The model is stamped with the lowest IR version its opset needs, so older onnxruntime builds load it.

    Raises ExportError for an opset gapcam does not export (runtime.inference.compat.OPSETS).
    """
    if opset not in OPSETS:
        raise ExportError(
            f"--opset {opset}: gapcam exports opsets {OPSETS[0]} to {OPSETS[-1]} (each tested on onnxruntime; see docs/compatibility.md)"
        )
    fc = linear_layer(model)
    with_maps = class_maps and fc.out_features <= fc.in_features
    names = [*OUTPUT_NAMES, CLASS_MAPS_NAME] if with_maps else list(OUTPUT_NAMES)
    traced = WithClassMaps(model) if with_maps else model
    example = torch.randn(2, spec.channels, *spec.size)
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            traced.eval(),
            (example,),
            input_names=[INPUT_NAME],
            output_names=names,
            opset_version=opset,
            dynamo=True,
            external_data=False,  # one file: the exporter would otherwise write weights beside it
            dynamic_shapes=({0: batch},),
            verbose=False,
        )
    if program is None:  # only the legacy exporter (dynamo=False) returns none
        raise ExportError(f"torch {torch.__version__}: the dynamo exporter returned no ONNX program")
    proto = program.model_proto
    if default_opset(proto) != opset:  # the exporter falls back to its own opset where it cannot convert
        raise ExportError(f"--opset {opset}: torch {torch.__version__} exported opset {default_opset(proto)} instead")
    stamp_lowest_versions(proto)
    strip_exporter_traces(proto)
    return proto


def strip_exporter_traces(proto: onnx.ModelProto) -> None:
    """Drop the exporter's debugging records from every node and value: torch's stack traces (with the
    exporting machine's file paths), module hierarchies and FX names. A shipped model carries none of
    them; gapcam's own metadata is on the model, which this leaves alone."""
    graph = proto.graph
    for node in graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        del value.metadata_props[:]


@raises_only(ExportError)
def export_model(
    model: torch.nn.Module,
    info: ModelInfo,
    out: str | os.PathLike,
    samples: torch.Tensor | None = None,
    opset: int = OPSET,
    int8: Int8Options | None = None,
) -> ExportReport:
    """Write `model` with `info` (plus the measured parity) as metadata to `out`, but only if the
    checker and parity pass; `info` itself is left as given. With `int8`, also the INT8 model
    (`export.int8`), and neither file unless it passes its fidelity gate.

    `samples` are uint8 [k, H, W, C] real images at model size for the parity check.
    Raises ExportError when the checker refuses the graph, parity fails, or the INT8 model fails
    its gate; nothing is written then.
    """
    out = Path(out)
    proto = to_onnx_proto(model, info.preprocess, opset)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as err:
        raise ExportError(f"{out}: the ONNX checker refused the exported graph: {first_line(err)}") from None
    parity = measure_parity(model, proto.SerializeToString(), info.fc_weight, parity_inputs(samples, info.preprocess))
    if not parity["passed"]:
        raise ExportError(
            f"{out}: torch-vs-onnxruntime parity failed (relative logits {parity['logits']['relative']:.2e}, "
            f"features {parity['features']['relative']:.2e}, cams {parity['cams']['relative']:.2e}, "
            f"tolerance {parity['tolerance']:.0e}, argmax agree {parity['argmax_agree']}); nothing written"
        )
    info = replace(info, parity=parity, min_onnxruntime=required_onnxruntime(opset, "fp32"))
    for key, value in info.to_props().items():
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name, proto.producer_version = "gapcam", runtime.__version__
    quantized = None
    with atomic_path(out) as tmp:
        onnx.save_model(proto, tmp, save_as_external_data=False)
        size = tmp.stat().st_size
        if int8 is not None:
            quantized = quantize_model(tmp, int8, name=out)
    return ExportReport(out, opset, size, _graph_signature(proto.graph.input), _graph_signature(proto.graph.output), parity, quantized)


@raises_only(ExportError)
def export_checkpoint(
    checkpoint_path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    opset: int = OPSET,
    int8: Int8Options | None = None,
    face_crops: bool | None = None,
) -> ExportReport:
    """`python -m export CHECKPOINT`: the checkpoint's model and metadata as `CHECKPOINT.onnx` (or `out`),
    and with `int8` its INT8 model too (`export.recipe_data.recipe_calibration` gives the recipe's data).
    `face_crops` (None: what the checkpoint's recipe says; the fer recipe's inputs are face crops)
    is recorded in the metadata, so that applications find faces first.

    Raises ExportError for an unreadable checkpoint, an output that would replace it, or a failed check.
    """
    checkpoint_path = Path(checkpoint_path)
    checkpoint = load_checkpoint(checkpoint_path)
    model = model_from_checkpoint(checkpoint, str(checkpoint_path))
    info = ModelInfo(
        labels=list(checkpoint.labels),
        preprocess=Preprocess.from_dict(checkpoint.preprocess),
        fc_weight=model.fc.weight.detach().numpy().astype(np.float32),
        fc_bias=model.fc.bias.detach().numpy().astype(np.float32),
        pool=model.arch.pool,
        box_threshold=checkpoint.localization.get("box_threshold", PAPER_BOX_THRESHOLD),
        architecture=model.arch.to_dict(),
        face_crops=recipe_of_checkpoint(checkpoint.provenance, checkpoint.labels).face_crops if face_crops is None else face_crops,
        activation=checkpoint.activation,
        thresholds=list(checkpoint.thresholds),
        source_sha256=sha256_file(checkpoint_path),
        gapcam_version=runtime.__version__,
        provenance={
            **checkpoint.provenance.to_dict(),
            "localization": checkpoint.localization,
            "checkpoint": checkpoint_path.name,
            "exported_with": {"torch": str(torch.__version__), "onnx": onnx.__version__, "opset": opset},
        },
    )
    out = Path(out) if out is not None else checkpoint_path.with_suffix(".onnx")
    if out.resolve() == checkpoint_path.resolve():
        raise ExportError(f"{out}: refusing to overwrite the checkpoint with the ONNX file")
    return export_model(model, info, out, checkpoint.samples, opset, int8)
