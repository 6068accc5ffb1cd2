"""`FaceSession`: a face model on whole photos. Every face is detected, cropped as the model saw
faces in training, and all faces of all the images go through the model in one inference call;
each face's CAM and box are mapped back onto the photo."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from runtime.errors import CamError
from runtime.faces.crops import DEFAULT_MARGIN, Box, face_crop_box
from runtime.faces.detect import FaceDetector, HaarFaceDetector, sorted_boxes
from runtime.inference.session import CamSession
from runtime.inputs.image import ImageInput, image_list, load_image, to_color
from runtime.maps.results import CamResult, ClassChoice
from runtime.reports.overlay import blend_map, draw_labeled_box

MAX_FACES = 64  # faces kept per image (the largest): a crowd photo cannot make an unbounded batch

FACE_COLOR = (255, 255, 255)
CAM_BOX_COLOR = (255, 220, 0)


@dataclass
class Face:
    """One face of an image: where it is, what the model saw, and the model's answer on it."""

    face_box: Box  # the detector's box in image pixels (x0, y0, x1, y1, end-exclusive)
    crop_box: Box  # the square the model saw, in image pixels (runtime.faces.crops)
    result: CamResult  # the model's answer on the crop: its maps and boxes are in crop pixels
    track: int | None = None  # the same face across a video's frames (runtime.video), else None

    @property
    def label(self) -> str:
        return self.result.label

    @property
    def prob(self) -> float:
        return self.result.prob

    @property
    def probs(self) -> npt.NDArray[np.float32]:
        return self.result.probs

    @property
    def classes(self) -> npt.NDArray[np.int64]:
        return self.result.classes

    @property
    def cam(self) -> npt.NDArray[np.float32]:
        """[side, side] the first explained class's map at the crop's size, in [0, 1]."""
        return self.result.cam

    @property
    def boxes(self) -> npt.NDArray[np.int64]:
        """[k, 4] each explained class's CAM box in the whole image's pixels."""
        offset = np.asarray(self.crop_box[:2] * 2, dtype=np.int64)
        shifted: npt.NDArray[np.int64] = self.result.boxes + offset
        return shifted

    @property
    def box(self) -> Box:
        """The first explained class's CAM box in the whole image's pixels."""
        x0, y0, x1, y1 = (int(v) for v in self.boxes[0])
        return x0, y0, x1, y1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: results.json's fields of a face (no maps)."""
        explained = self.result.to_dict()
        for entry, box in zip(explained["explained"], self.boxes, strict=True):
            entry["box"] = [int(v) for v in box]
        track = {} if self.track is None else {"track": self.track}
        return {
            "face_box": list(self.face_box),
            "crop_box": list(self.crop_box),
            **track,
            "prob": self.prob,
            "box": list(self.box),
            **explained,
        }


class FaceSession:
    """A face model (`session.info.face_crops`) on photos with any number of faces.

    >>> faces = FaceSession("fer2013-minixception").run("group.jpg")[0]
    >>> [(face.face_box, face.label, face.prob, face.box) for face in faces]
    >>> FaceSession("fer2013-minixception").overlay("group.jpg", faces).save("group_cam.png")

    `detector` defaults to OpenCV's Haar cascade (`gapcam[faces]`); any object with a
    `detect(PIL image) -> [n, 4] boxes` method serves. `margin` widens the detector's box on each
    side before cropping (runtime.faces.crops). An image without a face gives an empty list.
    """

    def __init__(
        self,
        session: CamSession | str | os.PathLike[str],
        detector: FaceDetector | None = None,
        *,
        margin: float = DEFAULT_MARGIN,
        max_faces: int = MAX_FACES,
    ):
        if max_faces < 1:
            raise CamError(f"max_faces must be at least 1, got {max_faces}")
        face_crop_box((0, 0, 1, 1), (1, 1), margin)  # refuse a bad margin now, not at the first face
        self.session = session if isinstance(session, CamSession) else CamSession(session)
        self.detector = detector if detector is not None else HaarFaceDetector()
        self.margin, self.max_faces = margin, max_faces

    def find(self, picture: Image.Image) -> list[tuple[Box, Box]]:
        """(face box, crop box) of each face in a decoded image, largest first, at most `max_faces`.

        Any detector's boxes are checked ([n, 4] finite x0, y0, x1, y1), rounded, clipped to the
        image and sorted here; an empty one is dropped."""
        try:
            raw = np.asarray(self.detector.detect(picture), dtype=np.float64)
        except (TypeError, ValueError):
            raw = np.full((1,), np.nan)  # ragged or not numbers: refused below
        if raw.size == 0:
            return []
        if raw.ndim != 2 or raw.shape[1] != 4 or not np.isfinite(raw).all():
            raise CamError(f"face detector: expected finite boxes [n, 4] (x0, y0, x1, y1), got an array of shape {list(raw.shape)}")
        size = (picture.height, picture.width)
        boxes = sorted_boxes(raw, picture.size)[: self.max_faces]
        return [
            (face_box, face_crop_box(face_box, size, self.margin))
            for face_box in ((int(a), int(b), int(c), int(d)) for a, b, c, d in boxes)
        ]

    def run(
        self, images: ImageInput | Sequence[ImageInput], classes: ClassChoice = None, topk: int | None = None, method: str = "cam"
    ) -> list[list[Face]]:
        """Each image's faces (largest first), all of them classified and explained in one inference
        call; `classes`, `topk` and `method` as in `CamSession.run` (per-face arrays are not taken)."""
        if isinstance(classes, np.ndarray) and classes.ndim == 2:
            raise CamError("classes: a per-image array does not apply to faces; give labels or indices")
        pictures = [self.session.load_image(item) for item in image_list(images)]
        return self.explain_found(pictures, [self.find(picture) for picture in pictures], classes, topk, method)

    def explain_found(
        self,
        pictures: Sequence[Image.Image],
        found: Sequence[Sequence[tuple[Box, Box]]],
        classes: ClassChoice = None,
        topk: int | None = None,
        method: str = "cam",
        *,
        tracks: Sequence[int] | None = None,
        adjust: Callable[[npt.NDArray[np.float32], dict[str, npt.NDArray[np.float32]]], None] | None = None,
    ) -> list[list[Face]]:
        """Each picture's faces from its `find` boxes, all crops in one inference call (none: no call).
        `adjust(logits, maps)` may change the model's outputs in place before they are explained (a
        video's smoothing); `tracks` gives each face, in order, its track id."""
        crops = [picture.crop(crop) for picture, faces in zip(pictures, found, strict=True) for _, crop in faces]
        if not crops:
            return [[] for _ in pictures]
        logits, maps = self.session.model_outputs(crops, method)
        if adjust is not None:
            adjust(logits, maps)
        answers = iter(self.session.explain(logits, maps, [(crop.height, crop.width) for crop in crops], classes, topk, method))
        ids = iter(tracks) if tracks is not None else itertools.repeat(None)
        return [[Face(face_box, crop_box, next(answers), next(ids)) for face_box, crop_box in faces] for faces in found]

    def overlay(self, image: ImageInput, faces: Sequence[Face], **options: Any) -> Image.Image:
        """The whole photo with each face's heatmap, box, label and CAM box; see `face_overlay`."""
        return face_overlay(image, faces, **options)


def face_overlay(image: ImageInput, faces: Sequence[Face], *, alpha: float = 0.5, colormap: str = "jet") -> Image.Image:
    """The whole photo, each face's CAM blended inside its crop, its face box (white) labelled with
    the first explained class and its probability, and its CAM box (yellow). No face: the photo."""
    if not 0.0 <= alpha <= 1.0:
        raise CamError(f"alpha must be within [0, 1], got {alpha}")
    out = to_color(load_image(image), "RGB").copy()
    for face in faces:
        region = out.crop(face.crop_box)
        out.paste(blend_map(region, face.result.cams_scaled[0], alpha, colormap), face.crop_box[:2])
    for face in faces:
        draw_labeled_box(out, face.box, None, CAM_BOX_COLOR)
        draw_labeled_box(out, face.face_box, f"{face.label} {face.prob:.2f}", FACE_COLOR)
    return out
