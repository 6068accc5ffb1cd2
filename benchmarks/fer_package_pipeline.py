"""The `fer` package's own pipeline on the frames gapcam's face benchmark times: one JSON object on stdout.

Run with the interpreter of the optional `.venv-fer` (`make fer-venv`), never gapcam's own venv:

    .venv-fer/bin/python benchmarks/fer_package_pipeline.py FRAMES_DIR [--repeats 5]

FRAMES_DIR holds PNG frames named `<faces>_<n>.png` (`1_0.png`, `4_0.png`, `16_0.png`, ...). For each face
count, `fer.fer.FER(mtcnn=False).detect_emotions(frame)` runs on every frame, warm-up first, then `--repeats`
rounds; ms_per_frame is the median of all those calls. The pipeline is fer's default: OpenCV's Haar cascade
(scale 1.1, 5 neighbours, faces of 50 px and up) on the grayscale frame, each box squared and grown by 10 px
a side, cut from the frame padded by 40 px, resized to 64x64, then fer's quantized TFLite mini-Xception, one
invoke per face. fer reads arrays as BGR (OpenCV's order): frames are read with cv2.imread, which gives BGR,
outside the timed calls. TensorFlow is held to `--threads` intra-op threads and one inter-op thread and
OpenCV to `--threads`; fer's TFLite interpreter runs on one thread (its default). stdout carries only the
JSON: anything written to it while fer and TensorFlow work goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

FRAME_NAME = re.compile(r"(\d+)_(\d+)\.png")


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Point file descriptor 1 at stderr meanwhile, so that C++ and Python logs cannot reach stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def frames_by_face_count(folder: Path) -> dict[int, list[Path]]:
    frames: dict[int, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        match = FRAME_NAME.fullmatch(path.name)
        if match:
            frames.setdefault(int(match.group(1)), []).append(path)
    return dict(sorted(frames.items()))


def measure(frames_by_count: dict[int, list[Path]], threads: int, repeats: int) -> dict[str, object]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    # Before any op runs: TensorFlow refuses these once its runtime is initialised.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import cv2
    import fer
    from fer.fer import FER

    cv2.setNumThreads(threads)
    detector = FER(mtcnn=False)
    results: dict[str, object] = {}
    for count, paths in frames_by_count.items():
        frames = []
        for path in paths:
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)  # BGR, as fer expects
            if frame is None:
                raise SystemExit(f"{path}: not a readable image")
            frames.append(frame)
        faces_found = [len(detector.detect_emotions(frame)) for frame in frames]  # the warm-up
        timings = []
        for _ in range(repeats):
            for frame in frames:
                start = time.perf_counter()
                detector.detect_emotions(frame)
                timings.append(time.perf_counter() - start)
        ms = 1000 * statistics.median(timings)
        results[str(count)] = {
            "ms_per_frame": round(ms, 2),
            "frames_per_second": round(1000 / ms, 1),
            "faces_found_median": statistics.median(faces_found),
            "frames": len(frames),
            "size": f"{frames[0].shape[1]}x{frames[0].shape[0]}",
        }
    return {
        "fer_version": fer.__version__,
        "tensorflow_version": tf.__version__,
        "opencv_version": cv2.__version__,
        "threads": threads,
        "repeats": repeats,
        "per_face_count": results,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("frames", type=Path, help="folder of <faces>_<n>.png frames")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds over the frames (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="TensorFlow intra-op and OpenCV threads (default 2)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        parser.error("--repeats and --threads must be at least 1")
    if not args.frames.is_dir():
        parser.error(f"{args.frames}: not a folder")
    frames = frames_by_face_count(args.frames)
    if not frames:
        parser.error(f"{args.frames}: no frames named <faces>_<n>.png")
    with stdout_to_stderr():
        report = measure(frames, args.threads, args.repeats)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
