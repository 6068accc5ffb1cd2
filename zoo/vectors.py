"""Test vectors: a few inputs with the outputs the model gave at packing time, replayed by `verify`.

Stored as `test_vectors.npz` (numpy arrays only, loaded with allow_pickle=False): images (uint8,
model size), logits, the top-1 class, its raw CAM and its box; for a multi-label model every
class's raw CAM and box, and which classes are positive (`positives`, bool [N, num_classes]).
"""

from __future__ import annotations

import io
import zipfile
import zlib

import numpy as np

from runtime.evaluation.compare import TOLERANCE, relative_difference
from runtime.inference.session import CamSession
from runtime.maps.boxes import box_iou
from runtime.maps.results import CamResult
from zoo.errors import ZooError

VECTORS = "test_vectors.npz"
MIN_BOX_IOU = 0.9  # a CAM pixel sitting on the threshold may move a box edge by a pixel


def explained(session: CamSession, images: list[np.ndarray]) -> list[CamResult]:
    """What the vectors record: the top class of a softmax model, every class of a multi-label model
    (whose positive classes differ from image to image)."""
    return session.run(images, classes=list(range(len(session.labels))) if session.info.multilabel else None)


def positives(session: CamSession, results: list[CamResult]) -> np.ndarray:
    """bool [N, num_classes]: each image's positive classes."""
    found = np.zeros((len(results), len(session.labels)), dtype=bool)
    for row, result in zip(found, results, strict=True):
        row[result.positives] = True
    return found


def make_vectors(session: CamSession, images: list[np.ndarray]) -> bytes:
    """Run `session` on model-size uint8 images and return the npz bytes."""
    results = explained(session, images)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        images=np.stack(images),
        logits=np.stack([r.logits for r in results]),
        classes=np.stack([r.classes for r in results]),
        cams_raw=np.stack([r.cams_raw for r in results]),
        boxes=np.stack([r.boxes for r in results]),
        **({"positives": positives(session, results)} if session.info.multilabel else {}),
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
    results = explained(session, list(vectors["images"]))
    classes = np.stack([r.classes for r in results])
    logits_error = relative_difference(vectors["logits"], np.stack([r.logits for r in results]))[1]
    same_classes = bool(np.array_equal(classes, vectors["classes"]))
    if session.info.multilabel or "positives" in vectors:  # a multi-label model's decisions, recorded or not, must agree
        same_classes &= "positives" in vectors and bool(np.array_equal(positives(session, results), vectors["positives"]))
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
