"""Graph preparation before INT8 calibration: rewrites that keep the graph's meaning exactly and make
valid graphs quantizable, and a clear refusal where no exact rewrite exists.

onnxruntime's calibrators fail on any tensor whose range is not finite (`autodetected range of
[4.2e-07, inf] is not finite`). The common cause in real models is `-inf` padding before max
pooling (Keras' `padding="same"`, timm's `MaxPool2dSame`, TF-ported networks): a `Pad` node with
value -inf feeding a `MaxPool`. MaxPool's own `pads` pad with -inf by definition, so the Pad folds
into them exactly (`fold_max_pool_padding`). A non-finite constant anywhere else would change the
graph's meaning if replaced, so it is refused by name (`check_finite_constants`).

Measured on onnxruntime 1.32 and left alone, because they quantize fine: all-zero weight channels
(per channel and per tensor, with or without bias), all-zero convolutions, and constant (dead ReLU)
activations.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import cast

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from export.errors import ExportError

LOWEST_FLOAT32 = float(np.finfo(np.float32).min)  # a pad value at or below it never wins a maximum over float32 values


def prepare_for_quantization(model: onnx.ModelProto) -> list[str]:
    """Rewrite `model` in place so that onnxruntime can calibrate it, changing none of its outputs;
    returns one line per change, for the INT8 metadata.

    Raises:
        ExportError: a constant (initializer or Constant node) holds inf or NaN that no exact rewrite removes.
    """
    changes = fold_max_pool_padding(model)
    check_finite_constants(model)
    return changes


def fold_max_pool_padding(model: onnx.ModelProto) -> list[str]:
    """Fold each constant `Pad` with value -inf (or the lowest float32) whose output feeds only
    `MaxPool` nodes into those nodes' `pads`; the Pad and its now unused constants (initializers,
    Constant nodes, or the nodes that computed its pads from them) are removed.

    Exact, since MaxPool pads with -inf itself. Skipped (left as it is) where it would not be:
    padding on the batch or channel axes, negative (cropping) pads, pads not constant, a MaxPool with
    `auto_pad` SAME_*, one whose Indices output is used, one whose padding would reach its kernel
    size (onnxruntime refuses that), or with `ceil_mode` where the output size would differ.
    """
    graph = model.graph
    constants = _constants(graph)
    consumers = _consumers(graph)
    outputs = {value.name for value in graph.output}
    shapes = None  # spatial input sizes, inferred only where ceil_mode needs them
    changes, removed, computing = [], [], []  # computing: the nodes that computed a removed Pad's constant inputs
    for pad in [node for node in graph.node if node.op_type == "Pad"]:
        users = consumers.get(pad.output[0], [])
        if not users or pad.output[0] in outputs or any(user.op_type != "MaxPool" for user in users):
            continue
        cone = _computed_constants(model, pad.input[1:], constants)  # the legacy exporter computes pads from constants
        amounts = _pad_amounts(pad, constants, rank=2 + len(_attribute(users[0], "kernel_shape", [])))
        if amounts is None:
            continue
        if shapes is None and any(_attribute(user, "ceil_mode", 0) for user in users):
            shapes = _spatial_sizes(model)
        folded = [_folded_pads(user, amounts, pad.input[0], shapes or {}) for user in users]
        if any(pads is None for pads in folded):
            continue
        for user, pads in zip(users, cast("list[list[int]]", folded), strict=True):
            _set_pads(user, pads)
            user.input[0] = pad.input[0]
        removed.append(pad)
        computing.extend(cone)
        changes.append(
            f"folded Pad {pad.name or pad.output[0]} (value -inf, pads {amounts}) into MaxPool "
            f"{', '.join(user.name or user.output[0] for user in users)}: exact, MaxPool pads with -inf"
        )
    for pad in removed:
        graph.node.remove(pad)
    if removed:
        _drop_unused_constants(graph, {name for pad in removed for name in pad.input[1:] if name}, computing)
        kept = [value for value in graph.value_info if value.name not in {pad.output[0] for pad in removed}]
        del graph.value_info[:]
        graph.value_info.extend(kept)
    return changes


def check_finite_constants(model: onnx.ModelProto) -> None:
    """Refuse a graph with a float constant holding inf or NaN: calibration cannot measure the tensors
    it reaches, and replacing it would change what the model computes.

    Raises:
        ExportError: naming the first such constant and the nodes that use it.
    """
    consumers = _consumers(model.graph)
    for name, array in _constant_arrays(model.graph):
        if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
            bad = array[~np.isfinite(array)]
            users = ", ".join(f"{node.op_type} {node.name or node.output[0]}" for node in consumers.get(name, [])) or "no node"
            raise ExportError(
                f"constant {name!r} holds {bad.size} non-finite value(s) ({bad.flat[0]}), used by {users}: INT8 calibration "
                "cannot measure what it reaches, and no exact rewrite removes it; export the model without it"
            )


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            if name:
                users.setdefault(name, []).append(node)
    return users


def _constant_arrays(graph: onnx.GraphProto) -> Iterator[tuple[str, np.ndarray]]:
    """(name, value) of every initializer and Constant node with a tensor value."""
    for tensor in graph.initializer:
        yield tensor.name, numpy_helper.to_array(tensor)
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            yield node.output[0], numpy_helper.to_array(node.attribute[0].t)


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    return dict(_constant_arrays(graph))


def _attribute(node: onnx.NodeProto, name: str, default):
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _pad_amounts(pad: onnx.NodeProto, constants: dict[str, np.ndarray], rank: int) -> list[int] | None:
    """The Pad's pads over the `rank` axes of its input (ONNX order: all begins, then all ends),
    where it is a constant -inf padding of non-negative spatial amounts; else None."""
    mode = _attribute(pad, "mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
        return None
    if len(pad.input) > 1:  # opset 11+: pads, constant_value and axes are inputs
        if pad.input[1] not in constants or len(pad.input) < 3 or pad.input[2] not in constants or constants[pad.input[2]].size != 1:
            return None
        pads = [int(v) for v in constants[pad.input[1]].ravel()]
        value = float(constants[pad.input[2]].ravel()[0])
        if len(pad.input) > 3 and pad.input[3]:
            if pad.input[3] not in constants:
                return None
            axes = [int(a) % rank for a in constants[pad.input[3]].ravel()]
            if len(pads) != 2 * len(axes) or len(set(axes)) != len(axes):
                return None
            full = [0] * (2 * rank)
            for i, axis in enumerate(axes):
                full[axis], full[rank + axis] = pads[i], pads[len(axes) + i]
            pads = full
    else:  # opset 2-10: attributes
        pads = [int(v) for v in _attribute(pad, "pads", [])]
        value = float(_attribute(pad, "value", 0.0))
    if len(pads) != 2 * rank:
        return None
    if not value <= LOWEST_FLOAT32 or rank < 3 or any(p < 0 for p in pads):  # NaN is not <= anything
        return None
    if pads[0] or pads[1] or pads[rank] or pads[rank + 1]:  # the batch and channel axes
        return None
    return pads


def _folded_pads(pool: onnx.NodeProto, amounts: list[int], data: str, shapes: dict[str, list[int]]) -> list[int] | None:
    """`pool`'s pads with the Pad's `amounts` added, where that computes the same; else None."""
    kernel = list(_attribute(pool, "kernel_shape", []))
    spatial = len(kernel)
    if not spatial or len(amounts) != 2 * (spatial + 2) or (len(pool.output) > 1 and pool.output[1]):
        return None
    auto_pad = _attribute(pool, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in ("NOTSET", "VALID"):
        return None
    own = list(_attribute(pool, "pads", [0] * (2 * spatial))) if auto_pad == "NOTSET" else [0] * (2 * spatial)
    added = amounts[2 : 2 + spatial] + amounts[4 + spatial :]
    pads = [a + b for a, b in zip(own, added, strict=True)]
    if any(max(pads[i], pads[spatial + i]) >= kernel[i] for i in range(spatial)):  # onnxruntime: "Pad should be smaller than kernel"
        return None
    if _attribute(pool, "ceil_mode", 0):
        sizes = shapes.get(data)
        if sizes is None or len(sizes) != spatial:
            return None
        strides = list(_attribute(pool, "strides", [1] * spatial))
        dilations = list(_attribute(pool, "dilations", [1] * spatial))
        for i in range(spatial):
            reach = dilations[i] * (kernel[i] - 1) + 1
            padded = sizes[i] + added[i] + added[spatial + i]
            before = _ceil_pool_size(padded, own[i], own[spatial + i], reach, strides[i])
            after = _ceil_pool_size(sizes[i], pads[i], pads[spatial + i], reach, strides[i])
            if before != after:
                return None
    return pads


def _ceil_pool_size(size: int, begin: int, end: int, reach: int, stride: int) -> int:
    """Output size of ceil_mode pooling, dropping a last window that starts in the end padding (ONNX, torch)."""
    out = math.ceil((size + begin + end - reach) / stride) + 1
    return out - 1 if (out - 1) * stride >= size + begin else out


def _spatial_sizes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """{tensor: its static spatial sizes} from onnx's shape inference, where all are known."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # no shapes: ceil_mode folds are skipped
        return {}
    sizes = {}
    for value in (*inferred.input, *inferred.value_info):
        dims = value.type.tensor_type.shape.dim[2:]
        if dims and all(d.HasField("dim_value") for d in dims):
            sizes[value.name] = [d.dim_value for d in dims]
    return sizes


def _set_pads(pool: onnx.NodeProto, pads: list[int]) -> None:
    kept = [a for a in pool.attribute if a.name not in ("pads", "auto_pad")]
    del pool.attribute[:]
    pool.attribute.extend([*kept, onnx.helper.make_attribute("pads", pads)])


def _computed_constants(model: onnx.ModelProto, names: Sequence[str], constants: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    """Evaluate each of `names` that a small subgraph computes from constants alone (onnx's reference
    evaluator), adding its value to `constants`; returns the nodes of those subgraphs."""
    producers = {output: node for node in model.graph.node for output in node.output}
    cone: list[onnx.NodeProto] = []
    for name in names:
        if not name or name in constants:
            continue
        nodes: list[onnx.NodeProto] = []
        pending, leaves, constant = [name], set(), True
        while pending and constant:
            tensor = pending.pop()
            if tensor in constants:
                leaves.add(tensor)
            elif tensor in producers and len(nodes) < 32:
                if producers[tensor] not in nodes:
                    nodes.append(producers[tensor])
                    pending.extend(i for i in producers[tensor].input if i)
            else:
                constant = False  # a graph input, or too large a subgraph
        if not constant:
            continue
        order = [node for node in model.graph.node if node in nodes]  # graph order is topological
        inputs = [numpy_helper.from_array(constants[leaf], leaf) for leaf in leaves]
        sub = onnx.helper.make_graph(order, "constant", [], [onnx.helper.make_empty_tensor_value_info(name)], inputs)
        try:
            (value,) = ReferenceEvaluator(onnx.helper.make_model(sub, opset_imports=model.opset_import)).run(None, {})
        except Exception:  # an op the evaluator lacks: the Pad is left as it is
            continue
        constants[name] = np.asarray(value)
        cone.extend(nodes)
    return cone


def _drop_unused_constants(graph: onnx.GraphProto, names: set[str], computing: Sequence[onnx.NodeProto] = ()) -> None:
    """Remove the initializers and Constant nodes among `names`, and the nodes of `computing`, that nothing uses any more."""
    while True:
        used = {name for node in graph.node for name in node.input} | {value.name for value in graph.output}
        dead = [n for n in graph.node if (n.op_type == "Constant" or n in computing) and not any(o in used for o in n.output)]
        dead = [n for n in dead if n in computing or n.output[0] in names]
        if not dead:
            break
        for node in dead:
            names |= set(node.input)
            graph.node.remove(node)
    unused = names - used
    for field in (graph.initializer, graph.input):  # old IR versions list initializers among the inputs too
        kept = [item for item in field if item.name not in unused]
        del field[:]
        field.extend(kept)
