"""The annotated video, written atomically: frames go to a temporary file beside the target, which
is renamed onto it only by `commit`; a run that fails or is abandoned leaves nothing half-written."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from types import TracebackType

import numpy as np
from PIL import Image

from runtime.errors import CamError
from runtime.formats.files import atomic_path
from runtime.optional import require

# FourCC per container. OpenCV's pip wheels carry an LGPL FFmpeg without an H.264 encoder: .mp4 is
# MPEG-4 Part 2 (plays in VLC, ffmpeg and most players, not in every browser).
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}


class VideoWriter:
    """Write RGB frames of one size at `fps` to `path` (.mp4, .avi, .mov, .mkv)."""

    def __init__(self, path: str | os.PathLike[str], fps: float, size: tuple[int, int]):
        cv2 = require("video")
        self._cv2 = cv2
        self.path = Path(path)
        if self.path.suffix.lower() not in FOURCC:
            raise CamError(f"{self.path}: write videos as {', '.join(sorted(FOURCC))}")
        if not fps > 0 or min(size) < 1:
            raise CamError(f"{self.path}: needs a positive frame rate and size, got {fps} fps and {size}")
        self.size, self.frames, self._done = size, 0, False
        self._exit = contextlib.ExitStack()
        self._tmp = self._exit.enter_context(atomic_path(self.path))
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*FOURCC[self.path.suffix.lower()]), float(fps), size)
        if not self._writer.isOpened():
            self._exit.__exit__(CamError, None, None)
            raise CamError(f"{self.path}: OpenCV cannot write this video")

    def write(self, image: Image.Image) -> None:
        if self._done:
            raise CamError(f"{self.path}: written already; open a new VideoWriter")
        if image.size != self.size:
            raise CamError(f"{self.path}: frame {self.frames} is {image.size}, the video is {self.size}")
        self._writer.write(self._cv2.cvtColor(np.asarray(image.convert("RGB")), self._cv2.COLOR_RGB2BGR))
        self.frames += 1

    def commit(self) -> None:
        """Finish the file and move it onto `path`; a video without a frame is refused, not written."""
        if self.frames == 0:
            self.abort()
            raise CamError(f"{self.path}: no frames to write")
        self._writer.release()
        self._done = True
        self._exit.close()

    def abort(self) -> None:
        """Drop the temporary file; `path` is left as it was."""
        self._writer.release()
        self._done = True
        self._exit.__exit__(CamError, CamError("aborted"), None)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        """Commit when the block ends normally; abort on an exception."""
        if exc_type is None:
            self.commit()
        else:
            self.abort()
