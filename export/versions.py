"""Stamp an ONNX model with the lowest IR version and opset imports its graph needs.

Exporters stamp the newest IR version their onnx release knows (torch 2.14 writes IR 10 for an
opset-18 graph), and onnxruntime's quantization tools import every domain onnxruntime registers
(`ai.onnx.ml` 5 among them). onnxruntime 1.15-1.17 read IR 9 at most and ai.onnx.ml 3 or 4, so
such files fail to load there although their graphs need nothing newer (runtime.inference.compat).
"""

from __future__ import annotations

import onnx

# Element types newer than IR 8, and the IR version that introduced each.
TYPE_IR = {
    **{getattr(onnx.TensorProto, name): 9 for name in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ")},
    **{getattr(onnx.TensorProto, name): 10 for name in ("UINT4", "INT4")},
    **{getattr(onnx.TensorProto, name): 11 for name in ("FLOAT4E2M1",) if hasattr(onnx.TensorProto, name)},
}


def _domain(name: str) -> str:
    return "" if name in ("", "ai.onnx") else name


def lowest_ir_version(opsets: dict[str, int]) -> int:
    """The IR version of the first onnx release that defines these ai.onnx and ai.onnx.ml opsets."""
    for _release, ir_version, ai_onnx, ai_onnx_ml, *_ in onnx.helper.VERSION_TABLE:  # oldest release first
        if opsets.get("", 0) <= ai_onnx and opsets.get("ai.onnx.ml", 0) <= ai_onnx_ml:
            return ir_version
    return onnx.IR_VERSION


def _element_types(model: onnx.ModelProto) -> set[int]:
    graph = model.graph
    types = {tensor.data_type for tensor in graph.initializer}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        types.add(value.type.tensor_type.elem_type)
    return types


def stamp_lowest_versions(model: onnx.ModelProto) -> None:
    """Keep only the opset imports that the model's nodes use (ai.onnx always), and set the lowest IR
    version those opsets and the model's element types need. The graph itself is not changed."""
    nodes = [*model.graph.node, *(node for function in model.functions for node in function.node)]
    used = {_domain(node.domain) for node in nodes} | {_domain(function.domain) for function in model.functions} | {""}
    kept = [entry for entry in model.opset_import if _domain(entry.domain) in used]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    opsets = {_domain(entry.domain): entry.version for entry in kept}
    model.ir_version = max([lowest_ir_version(opsets), *(TYPE_IR.get(t, 0) for t in _element_types(model))])


def default_opset(model: onnx.ModelProto) -> int:
    """The ai.onnx opset the model imports."""
    return next(entry.version for entry in model.opset_import if _domain(entry.domain) == "")
