"""`stream`: a video file or a live source through a gapcam model, one `FrameResult` per frame.

Frames are decoded ahead (runtime.video.frames) and batched into inference calls: a file's frames
`batch_size` at a time, a live source's one at a time (the newest), since waiting to fill a batch
would add its latency to every frame. A face model (a `FaceSession`) finds, tracks and classifies
every face of every frame; any other model explains the whole frame.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from runtime.errors import CamError
from runtime.faces.session import Face, FaceSession, face_overlay
from runtime.inference.session import CamSession
from runtime.maps.methods import get_method
from runtime.maps.results import CamResult
from runtime.reports.overlay import overlay
from runtime.video.frames import Frame, VideoSource
from runtime.video.tracking import FaceTracker, Smoother

BATCH_PIXELS = 32 * 640 * 480  # a file's frames per inference call: `batch_size`, fewer where frames are large


@dataclass
class FrameResult:
    """One frame and the model's answer: its faces (face models), or its whole-frame result."""

    frame: Frame
    faces: list[Face] | None = None  # a face model's faces in this frame (empty: none), else None
    result: CamResult | None = None  # the whole frame's answer where faces are not looked for

    def to_dict(self) -> dict[str, Any]:
        """results.jsonl's line for the frame: frame number, time in seconds, and faces or results."""
        answer = {"faces": [face.to_dict() for face in self.faces]} if self.faces is not None else self._result().to_dict()
        return {"frame": self.frame.index, "time": self.frame.time, **answer}

    def _result(self) -> CamResult:
        if self.result is None:
            raise CamError("a frame result holds faces or a result")
        return self.result


def stream(
    session: CamSession | FaceSession,
    source: str | int | os.PathLike[str] | VideoSource,
    *,
    batch_size: int = 8,
    every: int = 1,
    fps: float | None = None,
    smooth: float = 0.0,
    topk: int | None = None,
    method: str = "cam",
    live: bool | None = None,
) -> Generator[FrameResult, None, None]:
    """Each kept frame's `FrameResult`, in order, as soon as its batch is explained.

    `source`: a video file, a camera index, a stream URL, or an open `VideoSource` (then `every`,
    `fps` and `live` are its own). `smooth` in [0, 1): the weight of the past in each track's moving
    average of logits and maps (runtime.video.tracking; 0: none). A file's frames go `batch_size` to
    an inference call (fewer where they are large: at most BATCH_PIXELS pixels). Where decoding stops early (a truncated file), every
    frame decoded before it is yielded, then CamError says where it stopped.
    """
    if batch_size < 1:
        raise CamError(f"batch_size must be at least 1, got {batch_size}")
    explainer = FrameExplainer(session, topk=topk, method=method, smooth=smooth)
    frames = source if isinstance(source, VideoSource) else VideoSource(source, every=every, fps=fps, live=live)
    try:
        width, height = frames.size
        size = 1 if frames.live else max(1, min(batch_size, BATCH_PIXELS // max(1, width * height)))
        batch: list[Frame] = []
        for frame in frames:
            batch.append(frame)
            if len(batch) == size:
                yield from explainer.explain(batch)
                batch = []
        if batch:
            yield from explainer.explain(batch)
        if frames.error:
            raise CamError(frames.error)
    finally:
        if frames is not source:
            frames.close()


def check_smoothing(smooth: float, method: str) -> None:
    """Smoothing averages the outputs a method is made from; a method that reruns the model on each
    frame's inputs cannot be averaged that way: refused in one line."""
    if smooth and get_method(method).runs_model:
        raise CamError(f"smooth: {method} runs the model on each frame's own inputs, so its maps cannot be averaged over time")


class FrameExplainer:
    """Batches of frames -> `FrameResult`s, keeping the face tracks and moving averages between batches."""

    def __init__(self, session: CamSession | FaceSession, *, topk: int | None = None, method: str = "cam", smooth: float = 0.0):
        self.faces = session if isinstance(session, FaceSession) else None
        self.session = session.session if isinstance(session, FaceSession) else session
        check_smoothing(smooth, method)
        self.topk, self.method = topk, method
        self.tracker = FaceTracker()
        self.smoother = Smoother(smooth) if smooth else None

    def explain(self, frames: list[Frame]) -> list[FrameResult]:
        pictures = [frame.image for frame in frames]
        if self.faces is not None:
            found = [self.faces.find(picture) for picture in pictures]
            tracks = [track for faces in found for track in self.tracker.update([face_box for face_box, _ in faces])]
            answers = self.faces.explain_found(
                pictures, found, topk=self.topk, method=self.method, tracks=tracks, adjust=functools.partial(self._smooth, tracks)
            )
            return [FrameResult(frame, faces=faces) for frame, faces in zip(frames, answers, strict=True)]
        logits, maps = self.session.model_outputs(pictures, self.method)
        self._smooth([0] * len(frames), logits, maps)  # the whole frame is one track
        results = self.session.explain(logits, maps, [(p.height, p.width) for p in pictures], topk=self.topk, method=self.method)
        return [FrameResult(frame, result=result) for frame, result in zip(frames, results, strict=True)]

    def _smooth(self, tracks: list[int], logits: npt.NDArray[np.float32], maps: dict[str, npt.NDArray[np.float32]]) -> None:
        """Each input's logits and the maps its method is made from (never the inputs), replaced in
        place by its track's moving average; nothing without smoothing."""
        if self.smoother is None:
            return
        key = "class_maps" if "class_maps" in maps else "features"
        for i, track in enumerate(tracks):
            logits[i], maps[key][i] = self.smoother.update(track, logits[i], maps[key][i])
        self.smoother.forget(self.tracker.tracks if self.faces is not None else [0])


def annotate(frame: FrameResult, *, alpha: float = 0.5, colormap: str = "jet") -> Image.Image:
    """The frame as the annotated video shows it: each face's heatmap, box and label, or the whole
    frame's heatmap, CAM box and label."""
    if frame.faces is not None:
        return face_overlay(frame.frame.image, frame.faces, alpha=alpha, colormap=colormap)
    result = frame._result()
    return overlay(
        frame.frame.image, result.cams_scaled[0], alpha=alpha, colormap=colormap, box=result.box, label=f"{result.label} {result.prob:.2f}"
    )
