"""Video files and camera streams through a gapcam model: frames decoded ahead in a thread and
batched into inference calls, faces tracked from frame to frame, optional temporal smoothing, and
the annotated video written atomically. Decoding and encoding use OpenCV (`gapcam[video]`)."""

from runtime.video.frames import VIDEO_SUFFIXES, Frame, VideoSource, is_video
from runtime.video.stream import FrameResult, annotate, stream
from runtime.video.tracking import FaceTracker, Smoother
from runtime.video.writer import VideoWriter

__all__ = [
    "VIDEO_SUFFIXES",
    "FaceTracker",
    "Frame",
    "FrameResult",
    "Smoother",
    "VideoSource",
    "VideoWriter",
    "annotate",
    "is_video",
    "stream",
]
