"""Face detectors: an image in, face boxes out. gapcam's default is OpenCV's frontal-face Haar
cascade `alt2` (Viola-Jones, the family of detector FER2013's own crops and the `fer` package use);
docs/faces.md measures it against the other candidates (recall, false detections and speed on real
faces) and says why it was chosen, and its parameters."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image

from runtime.errors import CamError
from runtime.optional import require

Boxes = npt.NDArray[np.int64]  # [n, 4] x0, y0, x1, y1 in image pixels, end-exclusive


class FaceDetector(Protocol):
    """What `FaceSession` needs from a detector: every face's box in an image, largest first."""

    def detect(self, image: Image.Image) -> Boxes: ...


class HaarFaceDetector:
    """OpenCV's Haar cascade (Viola-Jones) on the grayscale image.

    Images larger than `max_side` are searched at that size (boxes are scaled back), so the cost of
    a photo does not grow with its pixels; `min_face` is the smallest face side searched, in pixels
    of the searched image. `scale_factor` and `min_neighbors` are OpenCV's (the `fer` package's
    values). Thread-safe: OpenCV's cascade is not, so one lock guards it.
    """

    @classmethod
    def for_streams(cls) -> HaarFaceDetector:
        """The settings for video frames and cameras: scale factor 1.2 and faces of 40 px or more
        take 40% of the photo settings' time for recall 0.957 against 0.983, and frames are searched
        at most 1280 px wide, 1080p's faces from 80 px found (docs/faces.md)."""
        return cls(scale_factor=1.2, min_face=40, max_side=1280)

    def __init__(
        self,
        cascade: str | Path = "haarcascade_frontalface_alt2.xml",
        *,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_face: int = 24,
        max_side: int = 1600,
    ):
        if scale_factor <= 1.0 or min_neighbors < 0 or min_face < 8 or max_side < min_face:
            raise CamError(
                "HaarFaceDetector: needs scale_factor > 1, min_neighbors >= 0, min_face >= 8 and max_side >= min_face, "
                f"got {scale_factor}, {min_neighbors}, {min_face}, {max_side}"
            )
        self._cv2 = require("faces")
        path = Path(cascade) if Path(cascade).is_file() else Path(self._cv2.data.haarcascades) / str(cascade)
        try:
            self._cascade = self._cv2.CascadeClassifier(str(path))
            loaded = not self._cascade.empty()
        except (self._cv2.error, SystemError):  # OpenCV's parser raises on malformed XML
            loaded = False
        if not loaded:
            raise CamError(f"{cascade}: not an OpenCV cascade file (or not one of those OpenCV ships)")
        self.scale_factor, self.min_neighbors, self.min_face, self.max_side = scale_factor, min_neighbors, min_face, max_side
        self._lock = threading.Lock()

    def detect(self, image: Image.Image) -> Boxes:
        gray = image.convert("L")
        scale = min(1.0, self.max_side / max(gray.size))
        if scale < 1.0:
            gray = gray.resize((max(1, round(gray.width * scale)), max(1, round(gray.height * scale))), Image.Resampling.BILINEAR)
        pixels: Any = np.asarray(gray)
        with self._lock:
            found = self._cascade.detectMultiScale(
                pixels, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(self.min_face, self.min_face)
            )
        return to_image_boxes(np.asarray(found, dtype=np.float64).reshape(-1, 4), scale, image.size)


def to_image_boxes(xywh: npt.NDArray[np.float64], scale: float, size: tuple[int, int]) -> Boxes:
    """[n, 4] (x, y, w, h) found at `scale` -> int x0, y0, x1, y1 in the image of `size` (width,
    height), clipped to it, largest face first."""
    corners = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1) / scale
    return sorted_boxes(corners, size)


def sorted_boxes(corners: npt.NDArray[np.float64], size: tuple[int, int]) -> Boxes:
    """[n, 4] x0, y0, x1, y1 -> int boxes rounded, clipped to an image of `size` (width, height),
    empty ones dropped, largest first."""
    width, height = size
    boxes = np.rint(corners).astype(np.int64)
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    ordered: Boxes = boxes[np.argsort(-areas, kind="stable")]
    return ordered
