"""Test vectors: a few inputs with the outputs the model gave at packing time, replayed by `verify`.

Stored as `test_vectors.npz` (numpy arrays only, loaded with allow_pickle=False): images (uint8,
model size), logits, the top-1 class, its raw CAM and its box.
"""

from __future__ import annotations

import io
import zipfile
import zlib

import numpy as np

from runtime.evaluation.compare import TOLERANCE, relative_difference
from runtime.inference.session import CamSession
from runtime.maps.boxes import box_iou
from zoo.errors import ZooError

VECTORS = "test_vectors.npz"
MIN_BOX_IOU = 0.9  # a CAM pixel sitting on the threshold may move a box edge by a pixel


def make_vectors(session: CamSession, images: list[np.ndarray]) -> bytes:
    """Run `session` on model-size uint8 images and return the npz bytes."""
    results = session.run(images)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        images=np.stack(images),
        logits=np.stack([r.logits for r in results]),
        classes=np.stack([r.classes for r in results]),
        cams_raw=np.stack([r.cams_raw for r in results]),
        boxes=np.stack([r.boxes for r in results]),
    )
    return buffer.getvalue()


def read_vectors(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of a test_vectors.npz; ZooError naming what is wrong when it is damaged or incomplete."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            vectors = {key: stored[key] for key in stored.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise ZooError(f"{VECTORS} is not a readable .npz ({err.__class__.__name__}: {err})") from None
    missing = [key for key in ("images", "logits", "classes", "cams_raw", "boxes") if key not in vectors]
    if missing:
        raise ZooError(f"{VECTORS} lacks the arrays {missing}")
    if vectors["images"].dtype != np.uint8 or not len(vectors["images"]):
        raise ZooError(f"{VECTORS}: images must be a non-empty uint8 array, got {vectors['images'].dtype} {list(vectors['images'].shape)}")
    return vectors


def replay_vectors(session: CamSession, data: bytes) -> dict:
    """Rerun the stored inputs; report the worst differences and whether they are within tolerance.

    Raises ZooError for a damaged or incomplete file, CamError for inputs the model refuses.
    """
    vectors = read_vectors(data)
    results = session.run(list(vectors["images"]), classes=None)
    classes = np.stack([r.classes for r in results])
    logits_error = relative_difference(vectors["logits"], np.stack([r.logits for r in results]))[1]
    same_classes = bool(np.array_equal(classes, vectors["classes"]))
    cams_error = relative_difference(vectors["cams_raw"], np.stack([r.cams_raw for r in results]))[1] if same_classes else float("inf")
    boxes, stored_boxes = np.stack([r.boxes for r in results]), vectors["boxes"]
    if stored_boxes.shape == boxes.shape:
        ious = [box_iou(a, b) for a, b in zip(boxes.reshape(-1, 4), stored_boxes.reshape(-1, 4), strict=True)]
    else:  # stored boxes of another shape (a damaged or doctored file) fail, never pass on fewer pairs
        ious = [0.0]
    return {
        "count": len(results),
        "logits_relative_error": logits_error,
        "cams_relative_error": cams_error,
        "classes_agree": same_classes,
        "min_box_iou": min(ious) if ious else 1.0,
        "passed": same_classes and logits_error <= TOLERANCE and cams_error <= TOLERANCE and (min(ious) if ious else 1.0) >= MIN_BOX_IOU,
    }
