"""Frames from a video file, an animated GIF, a camera or a network stream (OpenCV's FFmpeg build).

A file is decoded ahead in one thread into a bounded queue, so memory stays flat over any length
and the model never waits for the decoder. A live source (a camera index, an rtsp:// or http(s)://
URL, or a file with `live=True`) keeps only the newest frame: a consumer that falls behind skips
frames instead of drifting ever further behind the scene.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from PIL import Image

from runtime.errors import CamError, first_line
from runtime.optional import require

VIDEO_SUFFIXES = {
    ".mp4",
    ".m4v",
    ".mov",
    ".3gp",
    ".avi",
    ".mkv",
    ".webm",
    ".ogv",
    ".mpg",
    ".mpeg",
    ".ts",
    ".mts",
    ".m2ts",
    ".wmv",
    ".flv",
}  # and animated GIFs
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
# Containers whose header counts their frames exactly; elsewhere (Matroska, WebM, MPEG-TS) the count
# is duration x rate, an estimate, and a shorter decode is no sign of truncation. Decoding that stops
# this many frames (or this share of them) short of an exact count is a truncated file.
EXACT_COUNT_SUFFIXES = {".mp4", ".m4v", ".mov", ".3gp", ".avi", ".gif"}
SHORTFALL_FRAMES, SHORTFALL_SHARE = 2, 0.01


def without_credentials(source: str) -> str:
    """A stream URL as gapcam shows it (names, results, errors): without a user and password."""
    parts = urllib.parse.urlsplit(source)
    if parts.username is None and parts.password is None:
        return source
    host = parts.hostname or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=host + (f":{parts.port}" if parts.port else "")))


def is_video(path: str | os.PathLike[str]) -> bool:
    """A file to read as a video: a video suffix, or a GIF with more than one frame."""
    path = Path(path)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return True
    if path.suffix.lower() != ".gif" or not path.is_file():
        return False
    try:
        with Image.open(path) as gif:
            return bool(getattr(gif, "n_frames", 1) > 1)
    except (OSError, ValueError, Image.DecompressionBombError):
        return False  # an unreadable GIF is the image reader's to report


@dataclass(frozen=True)
class Frame:
    """One decoded frame: its number in the source (from 0), its time in seconds (the container's for
    a file; for a camera or stream, since the source opened, by the clock when it was grabbed), its
    pixels (RGB)."""

    index: int
    time: float
    image: Image.Image


_END = object()  # the decoder thread's last item


class VideoSource:
    """The frames of `source` (a path, a camera index or a stream URL) as an iterator of `Frame`s.

    `every=N` keeps every N-th frame; `fps=F` keeps one frame in the fewest that stay within F a
    second of the source's time (`kept_rate` is the rate that results). `live` (default: cameras and URLs) keeps
    only the newest frame, and a file read live is paced at its own frame rate, as a camera would
    deliver it. After iteration, `error` says in one line why decoding stopped early (a truncated
    file, a frame that failed to decode), else None. Use as a context manager, or call `close`.
    """

    def __init__(
        self, source: str | int | os.PathLike[str], *, every: int = 1, fps: float | None = None, live: bool | None = None, ahead: int = 16
    ):
        if every < 1:
            raise CamError(f"every must be at least 1, got {every}")
        if fps is not None and not fps > 0:
            raise CamError(f"fps must be positive, got {fps}")
        cv2 = require("video")
        self._cv2 = cv2
        text = str(source) if isinstance(source, int) else os.fspath(source)
        camera, url = text.isdigit(), text.lower().startswith(STREAM_SCHEMES)
        self.name = f"camera {text}" if camera else without_credentials(text)
        if not (camera or url) and not Path(text).is_file():
            raise CamError(f"{text}: no such video file")
        self.live = (camera or url) if live is None else live
        self._capture = cv2.VideoCapture(int(text) if camera else text)
        self._capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)  # a phone's portrait video upright, as players show it
        if not self._capture.isOpened():
            self._capture.release()
            what = "cannot be opened" if camera or url else "not a video OpenCV can decode (unknown format, or truncated before its index)"
            raise CamError(f"{self.name}: {what}")
        self.every, self.max_fps = every, fps
        rate = float(self._capture.get(cv2.CAP_PROP_FPS))
        self.fps = rate if rate > 0 else 30.0  # what the source declares; 30 where it declares nothing
        self.size = (int(self._capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        self.frame_count = 0 if (camera or url) else max(0, int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)))
        self.exact_count = not (camera or url) and Path(text).suffix.lower() in EXACT_COUNT_SUFFIXES
        self.error: str | None = None
        self.decoded = 0  # frames decoded from the source, kept or not
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=1 if self.live else max(1, ahead))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __iter__(self) -> Iterator[Frame]:
        if self._thread is not None:
            raise CamError(f"{self.name}: frames can be read once")
        self._thread = threading.Thread(target=self._decode, name="gapcam-video-decode", daemon=True)
        self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if item is _END:
                    return
                yield item
        finally:
            self._stop.set()  # a consumer that stops early stops the decoder too

    @property
    def kept_rate(self) -> float:
        """Frames a second of the source's time that `every` and `fps` keep."""
        return self.fps / (self.every * self._fps_step())

    def _fps_step(self) -> int:
        """Of the frames `every` keeps, keep one in this many: the fewest that stay within `fps`."""
        rate = self.fps / self.every
        return 1 if self.max_fps is None else max(1, math.ceil(rate / self.max_fps - 1e-9))

    def _decode(self) -> None:
        cv2, capture = self._cv2, self._capture
        index, started = 0, time.monotonic()
        step = self._fps_step()
        try:
            while not self._stop.is_set():
                if not capture.grab():
                    break
                seconds = self._timestamp(index, started)
                if index % (self.every * step) == 0:
                    ok, pixels = capture.retrieve()
                    if not ok:
                        self.error = f"{self.name}: frame {index} could not be decoded"
                        break
                    if self.live and self.frame_count:  # a file standing in for a camera: deliver in its own time
                        self._stop.wait(max(0.0, started + seconds - time.monotonic()))
                    self._put(Frame(index, seconds, Image.fromarray(cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB))))
                index += 1
                self.decoded = index
            short = self.frame_count - index
            if self.error is None and self.exact_count and not self._stop.is_set():
                if short > max(SHORTFALL_FRAMES, SHORTFALL_SHARE * self.frame_count):
                    self.error = f"{self.name}: decoding stopped at frame {index} of {self.frame_count} (truncated or corrupt)"
        except Exception as err:
            self.error = f"{self.name}: decoding failed at frame {index}: {first_line(err)}"
        finally:
            self._put(_END, always=True)

    def _timestamp(self, index: int, started: float) -> float:
        """The container's time of the frame just grabbed, in seconds, from the rate where it has none;
        for a camera or stream (no frame count), the clock's since `started`: their declared rates are
        often not the rate they deliver, and frames dropped on the way would shift every later time."""
        if self.live and not self.frame_count:
            return round(time.monotonic() - started, 6)
        msec = float(self._capture.get(self._cv2.CAP_PROP_POS_MSEC))
        return round(msec / 1000.0, 6) if msec > 0 or index == 0 else round(index / self.fps, 6)

    def _put(self, item: Any, always: bool = False) -> None:
        """Queue an item: a file waits for room (back-pressure), a live source replaces the stale frame.
        The end (`always`) waits for room and never replaces the last frame."""
        while True:
            if self._stop.is_set():  # closing: the end goes in if there is room, nothing waits for a reader
                if always:
                    with contextlib.suppress(queue.Full):
                        self._queue.put_nowait(item)
                return
            if self.live and not always:
                try:
                    self._queue.get_nowait()  # drop the frame no one took in time
                except queue.Empty:
                    pass
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.get(timeout=0.05)  # unblock a decoder waiting for room
                except queue.Empty:
                    pass
            self._thread.join()
        self._capture.release()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
