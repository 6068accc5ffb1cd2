"""What happens after inference: a model's outputs -> one `CamResult` per image.

`CamSession.run` calls `explain_outputs` on what onnxruntime returns; a client of a Triton server,
another onnxruntime process or a batch job calls it on outputs computed elsewhere, with the model's
`ModelInfo` and the original image sizes. Its cost does not grow with the images' pixels: maps stay
at feature resolution, boxes come from a map no larger than the model input (their coordinates
scaled to the image), and the CAM at image size is made on first access.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from runtime.deprecation import moved_names
from runtime.errors import CamError
from runtime.formats.onnx_model import ModelInfo
from runtime.maps.activations import activate
from runtime.maps.boxes import bounded_boxes
from runtime.maps.cam import scale_like_upsampled, upsample_bilinear
from runtime.maps.forward import Forward, ModelAccess
from runtime.maps.methods import get_method

# None (the top-k predicted), an index or a label, a sequence of them, or per-image indices [N, k].
ClassChoice: TypeAlias = int | np.integer[Any] | str | Sequence[int | np.integer[Any] | str] | npt.NDArray[np.integer[Any]] | None


@dataclass
class CamResult:
    """One image's prediction and the CAMs of the explained classes (predicted top-k, or requested)."""

    logits: npt.NDArray[np.float32]  # [num_classes] raw scores
    probs: npt.NDArray[np.float32]  # [num_classes] the model's activation of the logits: softmax, or sigmoid (multi-label)
    classes: npt.NDArray[np.int64]  # [k] explained class indices, best first when predicted
    labels: list[str]  # [k] their names
    cams_raw: npt.NDArray[np.float32]  # [k, h, w] the method's map unscaled, at feature resolution (CAM: sum_k w[c, k] * f_k)
    cams_scaled: npt.NDArray[np.float32]  # [k, h, w] cams_raw scaled as `cams` is: `cams` is its upsampling to the image
    boxes: npt.NDArray[np.int64]  # [k, 4] int x0, y0, x1, y1 in image pixels, end-exclusive
    image_size: tuple[int, int]  # (height, width) of the original image
    # The classes the model says are present, most probable first: a softmax model's top class, a
    # multi-label model's classes at or above their thresholds (none where it finds nothing).
    positives: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    positive_labels: list[str] = field(default_factory=list)  # their names

    @cached_property
    def cams(self) -> npt.NDArray[np.float32]:
        """[k, H, W] float32 in [0, 1] at the original image size, made on first access.

        Equal to torch's bilinear `F.interpolate(align_corners=False)` of `cams_raw` to the image
        size followed by min-max scaling of each map (a constant map gives zeros). It costs 4 bytes
        a pixel per class, so a large image's maps are made only when asked for.
        """
        return _unit_clip(upsample_bilinear(self.cams_scaled, self.image_size))

    @cached_property
    def cam(self) -> npt.NDArray[np.float32]:
        """[H, W] the first explained class's map at image size (made alone unless `cams` exists)."""
        maps = self.cams if "cams" in self.__dict__ else _unit_clip(upsample_bilinear(self.cams_scaled[:1], self.image_size))
        first: npt.NDArray[np.float32] = maps[0]  # numpy types an integer index's result as Any
        return first

    @property
    def label(self) -> str:
        return self.labels[0]

    @property
    def prob(self) -> float:
        return float(self.probs[self.classes[0]])

    @property
    def box(self) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = (int(v) for v in self.boxes[0])
        return x0, y0, x1, y1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no maps)."""
        return {
            "label": self.label,
            "explained": [
                {"class": int(c), "label": name, "prob": float(self.probs[c]), "box": [int(v) for v in box]}
                for c, name, box in zip(self.classes, self.labels, self.boxes, strict=True)
            ],
            "probs": [float(p) for p in self.probs],
            "positive": list(self.positive_labels),
        }


def _unit_clip(maps: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Clip float rounding back into [0, 1], in place: no second array of the image's size."""
    return np.clip(maps, 0.0, 1.0, out=maps)


def probabilities(info: ModelInfo, logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """[N, num_classes] the model's probabilities: the softmax of its logits, or their sigmoid for a
    multi-label model (`info.activation`)."""
    return activate(logits, info.activation)


def positive_classes(info: ModelInfo, logits: npt.NDArray[np.float32], probs: npt.NDArray[np.float32]) -> list[npt.NDArray[np.int64]]:
    """Per image, the classes the model says are present, most probable first: the top class of a
    softmax model; every class whose probability reaches its threshold (`info.thresholds`) for a
    multi-label model, which may be none. Ranked by logit: probabilities that saturate to 1 would tie."""
    order = np.argsort(-logits, axis=1, kind="stable")
    if not info.multilabel:
        return [row[:1].astype(np.int64) for row in order]
    above = probs >= np.asarray(info.thresholds, dtype=np.float32)
    return [row[above[i, row]].astype(np.int64) for i, row in enumerate(order)]


def choose_classes(
    classes: ClassChoice, logits: npt.NDArray[np.floating[Any]], labels: Sequence[str], topk: int = 1
) -> npt.NDArray[np.int64]:
    """[N, k] class indices to explain: the top-k predictions, or the requested classes.

    classes=None explains the top-k predicted classes; an index, a label, or a list of them the
    same classes for every image; an [N, k] index array chooses per image. Raises CamError naming
    the argument for anything else.
    """
    count = len(labels)
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
    indices: list[int] = []
    for item in wanted:
        if isinstance(item, str):
            if item not in labels:
                raise CamError(f"classes: unknown label {item!r} (labels: {list(labels)})")
            indices.append(list(labels).index(item))
        elif isinstance(item, (int, np.integer)) and 0 <= int(item) < count:
            indices.append(int(item))
        else:
            raise CamError(f"classes: {item!r} is not a label or an index within 0..{count - 1}")
    return np.tile(np.asarray(indices, dtype=np.int64), (logits.shape[0], 1))


def explained_classes(
    info: ModelInfo, classes: ClassChoice, logits: npt.NDArray[np.float32], positives: list[npt.NDArray[np.int64]], topk: int | None
) -> npt.NDArray[np.int64] | list[npt.NDArray[np.int64]]:
    """The classes to explain: [N, k] as `choose_classes` makes them, or, for a multi-label model
    asked for neither `classes` nor `topk`, one array per image of its `positives` (its most
    probable class where it has none, so that every result has a map)."""
    if classes is not None or topk is not None or not info.multilabel:
        return choose_classes(classes, logits, info.labels, 1 if topk is None else topk)
    return [found if len(found) else np.argmax(row, keepdims=True).astype(np.int64) for found, row in zip(positives, logits, strict=True)]


def explain_outputs(
    info: ModelInfo,
    logits: npt.ArrayLike,
    image_sizes: Sequence[tuple[int, int]],
    *,
    class_maps: npt.ArrayLike | None = None,
    features: npt.ArrayLike | None = None,
    classes: ClassChoice = None,
    topk: int | None = None,
    method: str = "cam",
    box_threshold: float | None = None,
    inputs: npt.ArrayLike | None = None,
    forward: Forward | None = None,
) -> list[CamResult]:
    """One `CamResult` per image from a gapcam model's outputs, wherever they were computed.

    logits: [N, num_classes]; class_maps: the model's `cams` output [N, num_classes, h, w], or
    features: its `features` output [N, K, h, w] (Eigen-CAM, Score-CAM and ReciproCAM need
    features); image_sizes: (H, W) of each original image. `classes`, `topk` and `method` as in
    `CamSession.run`; `box_threshold` defaults to the model's. A method that runs the model
    (`Method.runs_model`: Score-CAM) also needs `inputs`, the model input batch [N, C, H, W], and
    `forward`, one inference call from such a batch to its logits. Raises CamError for outputs that
    do not fit the model or each other.
    """
    explainer = get_method(method)
    logits = np.asarray(logits, dtype=np.float32)
    if logits.ndim != 2 or logits.shape[1] != info.num_classes or len(image_sizes) != len(logits):
        raise CamError(
            f"logits: expected [{len(image_sizes)}, {info.num_classes}] for {len(image_sizes)} image sizes, got {list(logits.shape)}"
        )
    threshold = info.box_threshold if box_threshold is None else box_threshold
    probs = probabilities(info, logits)
    positives = positive_classes(info, logits, probs)
    chosen = explained_classes(info, classes, logits, positives, topk)
    counts = [len(row) for row in chosen]
    # one maps call for the batch: per-image lists are padded with their last class, then cut back
    indices = np.stack([np.pad(row, (0, max(counts) - len(row)), mode="edge") for row in chosen]) if isinstance(chosen, list) else chosen
    model = ModelAccess(info, None if inputs is None else np.asarray(inputs, dtype=np.float32), forward)
    raw = explainer.maps(indices, features=features, weight=info.fc_weight, class_maps=class_maps, model=model)
    results = []
    for i, (size, found) in enumerate(zip(image_sizes, positives, strict=True)):
        explained, maps = indices[i, : counts[i]], raw[i, : counts[i]]
        scaled, peaks, boxes = _scaled_and_boxed(maps, size, threshold, info.preprocess.size, explainer.class_specific)
        results.append(
            CamResult(
                logits=logits[i],
                probs=probs[i],
                classes=explained,
                labels=[info.labels[c] for c in explained],
                cams_raw=maps,
                cams_scaled=scaled,
                boxes=boxes,
                image_size=(int(size[0]), int(size[1])),
                positives=found,
                positive_labels=[info.labels[c] for c in found],
            )
        )
    return results


def _scaled_and_boxed(
    raw: npt.NDArray[np.float32], size: tuple[int, int], threshold: float, bound: tuple[int, int], class_specific: bool
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """One image's maps [k, h, w] scaled as their upsampling to `size` is, their peaks and boxes. A
    class-agnostic method's k maps are one map repeated: it is scaled and boxed once."""
    if class_specific or len(raw) == 1:
        scaled, peaks = scale_like_upsampled(raw, size)
        return scaled, peaks, bounded_boxes(scaled, peaks, threshold, size, bound)
    scaled, peaks = scale_like_upsampled(raw[:1], size)
    boxes = bounded_boxes(scaled, peaks, threshold, size, bound)
    k = len(raw)
    return np.repeat(scaled, k, axis=0), np.repeat(peaks, k, axis=0), np.repeat(boxes, k, axis=0)


# Moved to runtime.maps.boxes, where the boxes a user gets are made, and (softmax) to runtime.maps.activations
# beside sigmoid (deprecated; runtime.deprecation).
__getattr__ = moved_names(
    __name__, {"box_map_size": "runtime.maps.boxes", "refine_box": "runtime.maps.boxes", "softmax": "runtime.maps.activations"}
)
