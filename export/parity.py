"""Torch-vs-onnxruntime parity: the numbers an export must meet before it is called done."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from runtime.evaluation.compare import TOLERANCE, relative_difference
from runtime.formats.onnx_model import CLASS_MAPS_NAME, INPUT_NAME
from runtime.inference.providers import CPU, open_inference_session
from runtime.inputs.image import Preprocess, normalize
from runtime.maps.cam import class_activation_maps

BATCH_SIZES = (1, 5)


def parity_inputs(samples: torch.Tensor | None, spec: Preprocess, seed: int = 0) -> dict[str, np.ndarray]:
    """Named float32 batches: random normal inputs, and real images (the checkpoint's samples)."""
    generator = np.random.default_rng(seed)
    batches = {}
    for size in BATCH_SIZES:
        batches[f"random x{size}"] = generator.standard_normal((size, spec.channels, *spec.size)).astype(np.float32)
    if samples is not None and len(samples):
        real = np.stack([normalize(image, spec) for image in samples.numpy()])
        for size in BATCH_SIZES:
            batches[f"samples x{size}"] = real[np.arange(size) % len(real)]
    return batches


def measure_parity(model: torch.nn.Module, onnx_model: str | Path | bytes, weight: np.ndarray, batches: dict[str, np.ndarray]) -> dict:
    """Largest torch-vs-onnxruntime differences for logits, features and all-class CAMs (with fc
    `weight` [num_classes, K]), and argmax agreement. `onnx_model` is a path or serialized bytes.
    Where the graph computes the class maps itself, "class_maps" compares them with the CAMs of
    torch's features.

    onnxruntime runs on its CPU provider, so the figures are reproducible on any machine.
    """
    session = open_inference_session(onnx_model if isinstance(onnx_model, bytes) else str(onnx_model), [CPU], "exported model")
    names = [output.name for output in session.get_outputs()]
    compared = ("logits", "features", "cams", "class_maps") if CLASS_MAPS_NAME in names else ("logits", "features", "cams")
    worst = {name: {"max_abs": 0.0, "relative": 0.0} for name in compared}
    argmax_agree = True
    for batch in batches.values():
        with torch.no_grad():
            logits_t, features_t = (t.numpy() for t in model(torch.from_numpy(batch)))
        logits_o, features_o, *class_maps_o = session.run(names, {INPUT_NAME: batch})
        classes = np.tile(np.arange(weight.shape[0]), (len(batch), 1))
        cams_t = class_activation_maps(features_t, weight, classes)
        pairs = {
            "logits": (logits_t, logits_o),
            "features": (features_t, features_o),
            "cams": (cams_t, class_activation_maps(features_o, weight, classes)),
        }
        if class_maps_o:
            pairs["class_maps"] = (cams_t, class_maps_o[0])
        for name, (reference, other) in pairs.items():
            max_abs, relative = relative_difference(reference, other)
            worst[name]["max_abs"] = max(worst[name]["max_abs"], max_abs)
            worst[name]["relative"] = max(worst[name]["relative"], relative)
        argmax_agree &= bool(np.array_equal(logits_t.argmax(1), logits_o.argmax(1)))
    return {
        **worst,
        "argmax_agree": argmax_agree,
        "inputs": list(batches),
        "tolerance": TOLERANCE,
        "provider": CPU,
        "passed": argmax_agree and all(worst[name]["relative"] <= TOLERANCE for name in worst),
    }
