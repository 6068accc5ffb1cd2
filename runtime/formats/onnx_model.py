"""What a gapcam ONNX file is (contract 2): its graph's input and output names, and its metadata.

`export` names the graph's tensors with INPUT_NAME and OUTPUT_NAMES and writes a `ModelInfo` with
`to_props()`; `CamSession` reads it back through onnxruntime's `custom_metadata_map` with
`from_props()`, so the runtime needs no onnx package. Every field is defined here once.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.errors import CamError, check_format
from runtime.inference.compat import version_tuple
from runtime.inputs.image import Preprocess
from runtime.maps.boxes import PAPER_BOX_THRESHOLD

FORMAT = "gapcam-onnx"
FORMAT_VERSION = 1
POOLINGS = ("gap", "gmp")
ACTIVATIONS = ("softmax", "sigmoid")  # one class per image, or each class present or not (multi-label)
DEFAULT_THRESHOLD = 0.5  # a multi-label class's decision threshold on its probability, where none was calibrated
PREFIX = "gapcam."
INPUT_NAME = "input"  # float32 [N, C, H, W], N dynamic
OUTPUT_NAMES = ("logits", "features")  # [N, num_classes] and [N, K, h, w]: the tensor pooling reduces
CLASS_MAPS_NAME = "cams"  # optional third output [N, num_classes, h, w]: every class's raw CAM, computed in the graph


def encode_array(array: npt.ArrayLike) -> dict[str, Any]:
    """float32 array -> JSON-safe dict; base64 keeps every bit, unlike decimal text."""
    little = np.ascontiguousarray(array, dtype="<f4")
    return {"dtype": "float32", "shape": list(little.shape), "base64": base64.b64encode(little.tobytes()).decode()}


def decode_array(data: Mapping[str, Any]) -> npt.NDArray[np.float32]:
    raw = base64.b64decode(data["base64"], validate=True)
    return np.frombuffer(raw, dtype="<f4").reshape(data["shape"]).astype(np.float32)


@dataclass
class ModelInfo:
    """Everything a runtime needs beside the graph: labels, preprocessing and the CAM weights."""

    labels: list[str]  # class names, in logit order
    preprocess: Preprocess  # how images become the model input
    fc_weight: npt.NDArray[np.float32]  # [num_classes, K] float32: the CAM weights w[c, k]
    fc_bias: npt.NDArray[np.float32]  # [num_classes] float32
    pool: str = "gap"  # pooling between features and fc: "gap" (average) or "gmp" (max)
    box_threshold: float = PAPER_BOX_THRESHOLD  # CAM share of max for boxes: calibrated on validation boxes, else the paper's
    architecture: dict[str, Any] = field(default_factory=dict)  # builder arguments, for the record
    source_sha256: str = ""  # sha256 of the checkpoint the model was exported from
    gapcam_version: str = ""  # gapcam version that exported the model
    parity: dict[str, Any] = field(default_factory=dict)  # torch-vs-onnxruntime figures at export
    provenance: dict[str, Any] = field(default_factory=dict)  # recipe, data fingerprint, metrics, ...
    quantization: dict[str, Any] = field(default_factory=dict)  # int8 models: settings and measured fidelity to the fp32 model
    min_onnxruntime: str = ""  # the oldest onnxruntime that runs the graph (runtime.inference.compat); "" in older files
    face_crops: bool = False  # trained on face crops (FER): find the faces in a photo first
    activation: str = "softmax"  # how logits become probabilities: "softmax", or "sigmoid" for multi-label models
    thresholds: list[float] = field(default_factory=list)  # sigmoid models: per class, probability >= threshold is positive

    def __post_init__(self) -> None:
        self.fc_weight = np.asarray(self.fc_weight, dtype=np.float32)
        self.fc_bias = np.asarray(self.fc_bias, dtype=np.float32)
        if self.fc_weight.ndim != 2 or self.fc_weight.shape[0] != len(self.labels):
            raise CamError(f"metadata: fc weight shape {self.fc_weight.shape} does not fit {len(self.labels)} labels")
        if self.fc_bias.shape != (len(self.labels),):
            raise CamError(f"metadata: fc bias shape {self.fc_bias.shape} does not fit {len(self.labels)} labels")
        if self.pool not in POOLINGS:
            raise CamError(f"metadata: pool must be one of {POOLINGS}, got {self.pool!r}")
        if not (np.isfinite(self.fc_weight).all() and np.isfinite(self.fc_bias).all()):
            raise CamError("metadata: fc_weight and fc_bias must be finite numbers")
        if not isinstance(self.face_crops, bool):
            raise CamError(f"metadata: face_crops must be true or false, got {self.face_crops!r}")
        if not isinstance(self.quantization, dict):
            raise CamError(f"metadata: quantization must be a JSON object, got {type(self.quantization).__name__}")
        if self.min_onnxruntime:
            try:
                version_tuple(self.min_onnxruntime)
            except (TypeError, AttributeError, ValueError):
                raise CamError(f"metadata: min_onnxruntime must be a version such as '1.15', got {self.min_onnxruntime!r}") from None
        if self.activation not in ACTIVATIONS:
            raise CamError(f"metadata: activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.activation == "sigmoid" and not self.thresholds:
            self.thresholds = [DEFAULT_THRESHOLD] * self.num_classes
        thresholds: object = self.thresholds
        if self.activation == "softmax" and thresholds:
            raise CamError("metadata: thresholds are for sigmoid (multi-label) models; a softmax model takes its top class")
        if not (isinstance(thresholds, list) and all(isinstance(t, (int, float)) and 0.0 <= t <= 1.0 for t in thresholds)):
            raise CamError(f"metadata: thresholds must be a list of numbers within [0, 1], got {thresholds!r}")
        if thresholds and len(thresholds) != self.num_classes:
            raise CamError(f"metadata: {len(thresholds)} thresholds do not fit {self.num_classes} labels")
        self.thresholds = [float(t) for t in self.thresholds]
        threshold: object = self.box_threshold  # a caller's value, checked: the annotation promises nothing at run time
        if not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):  # NaN fails too
            raise CamError(f"metadata: box_threshold must be a number within [0, 1], got {threshold!r}")

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def feature_channels(self) -> int:
        return int(self.fc_weight.shape[1])

    @property
    def multilabel(self) -> bool:
        """Whether each class is present or not on its own (sigmoid), rather than one class per image."""
        return self.activation == "sigmoid"

    @property
    def precision(self) -> str:
        """ "int8" for a quantized model (`export --int8`), else "fp32"."""
        return str(self.quantization.get("precision", "int8")) if self.quantization else "fp32"

    def to_props(self) -> dict[str, str]:
        values = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "labels": self.labels,
            "preprocess": self.preprocess.to_dict(),
            "fc_weight": encode_array(self.fc_weight),
            "fc_bias": encode_array(self.fc_bias),
            "pool": self.pool,
            "box_threshold": self.box_threshold,
            "architecture": self.architecture,
            "source_sha256": self.source_sha256,
            "gapcam_version": self.gapcam_version,
            "parity": self.parity,
            "provenance": self.provenance,
            "quantization": self.quantization,
            "min_onnxruntime": self.min_onnxruntime,
            "face_crops": self.face_crops,
            "activation": self.activation,
            "thresholds": self.thresholds,
        }
        return {PREFIX + key: json.dumps(value, sort_keys=True) for key, value in values.items()}

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str = "model") -> ModelInfo:
        """Parse metadata_props.

        Raises CamError naming `source` for missing gapcam metadata, another format or version, or
        any missing or malformed field.
        """
        if PREFIX + "format" not in props:
            raise CamError(f"{source}: not a gapcam model (no gapcam metadata; export it with `python -m export`)")
        try:
            values = {key[len(PREFIX) :]: json.loads(text) for key, text in props.items() if key.startswith(PREFIX)}
            check_format(values, FORMAT, FORMAT_VERSION, source, "gapcam model's metadata")
            return cls(
                labels=[str(label) for label in values["labels"]],
                preprocess=Preprocess.from_dict(values["preprocess"]),
                fc_weight=decode_array(values["fc_weight"]),
                fc_bias=decode_array(values["fc_bias"]),
                pool=values["pool"],
                box_threshold=float(values.get("box_threshold", PAPER_BOX_THRESHOLD)),
                architecture=values.get("architecture", {}),
                source_sha256=values.get("source_sha256", ""),
                gapcam_version=values.get("gapcam_version", ""),
                parity=values.get("parity", {}),
                provenance=values.get("provenance", {}),
                quantization=values.get("quantization", {}),
                min_onnxruntime=values.get("min_onnxruntime", ""),
                face_crops=values.get("face_crops", False),
                activation=values.get("activation", "softmax"),
                thresholds=values.get("thresholds", []),
            )
        except CamError as err:
            raise CamError(f"{source}: {err}" if not str(err).startswith(source) else str(err)) from None
        except (KeyError, TypeError, ValueError) as err:
            raise CamError(f"{source}: malformed gapcam metadata ({err.__class__.__name__}: {err})") from None
