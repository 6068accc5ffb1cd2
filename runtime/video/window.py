"""A live window for camera streams, where OpenCV was built with a GUI and there is a display.

`gapcam[video]` installs OpenCV's headless build (no GUI libraries, fit for servers and edge
boxes), which has no windows: there the annotated stream is written to a file instead. A user who
wants the window installs `opencv-python` in its place.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image

from runtime.optional import require

QUIT_KEYS = {ord("q"), 27}  # q or Esc


class Window:
    """One OpenCV window showing frames; `show` returns False once the user pressed q or Esc."""

    def __init__(self, title: str, cv2: Any):
        self.title, self._cv2 = title, cv2

    @classmethod
    def open(cls, title: str) -> Window | None:
        """A window, or None where there is no display or OpenCV has no GUI."""
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            return None
        cv2 = require("video")
        try:
            cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE)
        except cv2.error:  # the headless build: "The function is not implemented"
            return None
        return cls(title, cv2)

    def show(self, image: Image.Image) -> bool:
        self._cv2.imshow(self.title, self._cv2.cvtColor(np.asarray(image.convert("RGB")), self._cv2.COLOR_RGB2BGR))
        return (self._cv2.waitKey(1) & 0xFF) not in QUIT_KEYS

    def close(self) -> None:
        self._cv2.destroyWindow(self.title)
