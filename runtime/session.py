"""`CamSession`: an exported gapcam model in onnxruntime, from images to labels, CAMs and boxes."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
from PIL import Image

from runtime.boxes import cam_box
from runtime.cam import METHODS, explanation_maps, normalize_maps, upsample_bilinear
from runtime.errors import CamError
from runtime.image import ImageInput, Preprocess, load_image, preprocess
from runtime.onnx_model import INPUT_NAME, OUTPUT_NAMES, ModelInfo
from runtime.overlay import overlay
from runtime.package import MODEL
from runtime.providers import open_inference_session
from runtime.store import resolve_model

ClassChoice = Union[None, int, str, Sequence[Union[int, str]], np.ndarray]


@dataclass
class CamResult:
    """One image's prediction and the CAMs of the explained classes (predicted top-k, or requested)."""

    logits: np.ndarray  # [num_classes] raw scores
    probs: np.ndarray  # [num_classes] softmax of the logits
    classes: np.ndarray  # [k] explained class indices, best first when predicted
    labels: list[str]  # [k] their names
    cams: np.ndarray  # [k, H_img, W_img] float32 in [0, 1], at the original image size
    cams_raw: np.ndarray  # [k, h, w] the method's map unscaled, at feature resolution (CAM: sum_k w[c, k] * f_k)
    boxes: np.ndarray  # [k, 4] int x0, y0, x1, y1 in image pixels, end-exclusive

    @property
    def label(self) -> str:
        return self.labels[0]

    @property
    def prob(self) -> float:
        return float(self.probs[self.classes[0]])

    @property
    def cam(self) -> np.ndarray:
        return self.cams[0]

    @property
    def box(self) -> tuple[int, int, int, int]:
        return tuple(int(v) for v in self.boxes[0])  # type: ignore[return-value]

    def to_dict(self) -> dict:
        """JSON-ready summary (no maps)."""
        return {
            "label": self.label,
            "explained": [
                {"class": int(c), "label": name, "prob": float(self.probs[c]), "box": [int(v) for v in box]}
                for c, name, box in zip(self.classes, self.labels, self.boxes)
            ],
            "probs": [float(p) for p in self.probs],
        }


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


class CamSession:
    """Run a gapcam ONNX model and explain its predictions with class activation maps.

    >>> session = CamSession("shapes.onnx")
    >>> result = session.run("image.png")[0]
    >>> result.label, result.prob, result.box
    >>> session.overlay("image.png", result.cam).save("overlay.png")

    `providers=None` asks for CUDA when onnxruntime offers it and falls back to the CPU;
    `session.providers` reports what onnxruntime really uses. Safe to call from several threads.

    Raises CamError when the model cannot be found or loaded, is not a gapcam model, or a package's
    manifest disagrees with it; `run` raises CamError for unreadable images or bad arguments.
    """

    def __init__(self, model: str | os.PathLike, providers: Sequence[str] | None = None, *, box_threshold: float | None = None):
        if box_threshold is not None and not 0.0 <= box_threshold <= 1.0:
            raise CamError(f"box_threshold must be within [0, 1], got {box_threshold}")
        self.path, self.package = resolve_model(model)
        # A package's model loads from memory, so it cannot reach files outside the package.
        source = self.package.read(MODEL) if self.package else str(self.path)
        self._session = open_inference_session(source, providers, str(self.path))
        self.providers: list[str] = self._session.get_providers()
        self.info = ModelInfo.from_props(self._session.get_modelmeta().custom_metadata_map, source=str(self.path))
        # The model's own threshold (calibrated on validation boxes at training) unless the caller sets one.
        self.box_threshold = self.info.box_threshold if box_threshold is None else box_threshold
        self._check_signature()
        if self.package:
            self._check_manifest()

    def _check_signature(self) -> None:
        inputs = self._session.get_inputs()
        outputs = [o.name for o in self._session.get_outputs()]
        if len(inputs) != 1 or inputs[0].name != INPUT_NAME or tuple(outputs[:2]) != OUTPUT_NAMES:
            raise CamError(
                f"{self.path}: expected input {INPUT_NAME!r} and outputs {list(OUTPUT_NAMES)}, "
                f"got inputs {[i.name for i in inputs]} and outputs {outputs}"
            )
        shape = inputs[0].shape
        if len(shape) != 4 or shape[1] != self.preprocessing.channels:
            raise CamError(f"{self.path}: input shape {shape} does not fit {self.preprocessing.channels}-channel images")

    def signature(self) -> dict:
        """The graph's input and outputs as a manifest declares them: name, dtype, shape (batch symbolic)."""

        def describe(value) -> dict:
            dtype = {"tensor(float)": "float32"}.get(value.type, value.type)
            return {"name": value.name, "dtype": dtype, "shape": list(value.shape)}

        return {"input": describe(self._session.get_inputs()[0]), "outputs": [describe(o) for o in self._session.get_outputs()]}

    def _check_manifest(self) -> None:
        """A package's manifest must describe the model it holds: labels, input and output shapes."""
        manifest = self.package.manifest
        problems = []
        if manifest.labels != self.info.labels:
            problems.append(f"labels {manifest.labels} vs the model's {self.info.labels}")
        actual = self.signature()
        declared_shapes = {o.get("name"): o.get("shape", [])[1:] for o in [manifest.input, *manifest.outputs]}
        actual_shapes = {o["name"]: o["shape"][1:] for o in [actual["input"], *actual["outputs"]]}
        if declared_shapes != actual_shapes:
            problems.append(f"shapes {declared_shapes} vs the model's {actual_shapes}")
        if problems:
            raise CamError(f"{self.path}: manifest disagrees with {MODEL}: {'; '.join(problems)}")

    @property
    def labels(self) -> list[str]:
        return self.info.labels

    @property
    def preprocessing(self) -> Preprocess:
        return self.info.preprocess

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return self.info.preprocess.size

    def to_batch(self, images: ImageInput | Sequence[ImageInput]) -> np.ndarray:
        """float32 [N, C, H, W], exactly what the model sees; `preprocessing` says how it is made."""
        return preprocess(images, self.preprocessing)

    def infer(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One inference call: (logits [N, num_classes], features [N, K, h, w])."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        channels = self.preprocessing.channels
        if batch.ndim != 4 or batch.shape[1:] != (channels, *self.input_size):
            raise CamError(f"infer: expected a batch [N, {channels}, {self.input_size[0]}, {self.input_size[1]}], got {batch.shape}")
        logits, features = self._session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
        return logits, features

    def _class_indices(self, classes: ClassChoice, logits: np.ndarray, topk: int) -> np.ndarray:
        """[N, k] class indices to explain: the top-k predictions, or the requested classes."""
        count = len(self.labels)
        if classes is None:
            if not 1 <= topk <= count:
                raise CamError(f"topk must be within 1..{count}, got {topk}")
            return np.argsort(-logits, axis=1, kind="stable")[:, :topk]
        if isinstance(classes, np.ndarray) and classes.ndim == 2:  # per-image classes [N, k]
            if classes.shape[0] != logits.shape[0] or classes.shape[1] == 0:
                raise CamError(f"classes: per-image array must be [{logits.shape[0]}, k], got {list(classes.shape)}")
            if classes.min() < 0 or classes.max() >= count:
                raise CamError(f"classes: indices must be within 0..{count - 1}")
            return classes.astype(np.int64)
        wanted = [classes] if isinstance(classes, (int, np.integer, str)) else list(classes)
        if not wanted:
            raise CamError("classes: empty list")
        indices = []
        for item in wanted:
            if isinstance(item, str):
                if item not in self.labels:
                    raise CamError(f"classes: unknown label {item!r} (labels: {self.labels})")
                indices.append(self.labels.index(item))
            elif isinstance(item, (int, np.integer)) and 0 <= int(item) < count:
                indices.append(int(item))
            else:
                raise CamError(f"classes: {item!r} is not a label or an index within 0..{count - 1}")
        return np.tile(np.asarray(indices, dtype=np.int64), (logits.shape[0], 1))

    def run(
        self, images: ImageInput | Sequence[ImageInput], classes: ClassChoice = None, topk: int = 1, method: str = "cam"
    ) -> list[CamResult]:
        """Predict and explain one or many images (a list runs as one inference call).

        classes=None explains the top-k predicted classes; an index, a label, or a list of them
        explains those classes for every image; an [N, k] index array chooses per image.
        method: "cam" (the paper's), "gradcam" (equal to ReLU(CAM) / (h w) for this head) or
        "eigencam" (class-agnostic), all from the same two outputs.
        """
        if method not in METHODS:
            raise CamError(f"method must be one of {list(METHODS)}, got {method!r}")
        items = list(images) if isinstance(images, (list, tuple)) else [images]
        pictures = [load_image(item) for item in items]
        logits, features = self.infer(self.to_batch(pictures))
        indices = self._class_indices(classes, logits, topk)
        raw = explanation_maps(method, features, self.info.fc_weight, indices)
        probs = softmax(logits)
        return [
            self._result(picture, logits[i], probs[i], indices[i], raw[i])
            for i, picture in enumerate(pictures)
        ]

    def _result(self, picture: Image.Image, logits, probs, indices, raw) -> CamResult:
        width, height = picture.size
        cams = normalize_maps(upsample_bilinear(raw, (height, width)))
        boxes = np.array([cam_box(cam, self.box_threshold) for cam in cams], dtype=np.int64).reshape(-1, 4)
        return CamResult(
            logits=logits,
            probs=probs,
            classes=indices,
            labels=[self.labels[c] for c in indices],
            cams=cams,
            cams_raw=raw,
            boxes=boxes,
        )

    def overlay(self, image: ImageInput, cam: np.ndarray, **options) -> Image.Image:
        """A heatmap of `cam` blended over `image` (jet by default); see `runtime.overlay.overlay`."""
        return overlay(image, cam, **options)

    def __repr__(self) -> str:
        return f"CamSession({str(self.path)!r}, labels={self.labels}, input_size={self.input_size}, providers={self.providers})"
