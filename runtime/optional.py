"""Optional dependencies, imported only where a feature uses them: a missing one is a one-line
CamError naming the extra that installs it, never an ImportError at `import runtime`."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from runtime.errors import CamError

# The module each extra brings and what it is for, as `pip install 'gapcam[EXTRA]'` installs it.
EXTRAS = {
    "faces": ("cv2", "opencv-python-headless", "face detection"),
    "video": ("cv2", "opencv-python-headless", "video files and camera streams"),
    "dicom": ("pydicom", "pydicom", "reading DICOM files"),
}


def require(extra: str) -> ModuleType:
    """The module behind `extra` (its import is cached by Python), or CamError naming what to install."""
    module, distribution, purpose = EXTRAS[extra]
    if module == "cv2":
        quiet_opencv()
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CamError(f"{purpose} needs {distribution}, which is not installed: pip install 'gapcam[{extra}]'") from None


def quiet_opencv() -> None:
    """OpenCV and its FFmpeg print warnings of their own (a camera index that does not exist, a
    truncated frame) to stderr: gapcam reports such failures in one line, so silence them unless
    the user asked for OpenCV's logs. Read by OpenCV when it loads, so set before the import."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's AV_LOG_QUIET
