"""Faces and video, measured: which face detector, how wide a face crop, which video library.

    .venv/bin/python benchmarks/face_study.py [--quick] [--wheels DIR] > study.md

The three studies behind docs/faces.md; Markdown tables go to stdout.

1. Face detectors on real faces: the one-face photos packages ship (scikit-image's astronaut,
   matplotlib's Grace Hopper; each face's box checked by eye), the astronaut photo at five scales in
   640x480 scenes, and scikit-image's `lfw_subset` (Labeled Faces in the Wild, 25x25 gray): its 100
   faces pasted at 48, 80 and 128 px into 640x480 scenes made here from scikit-image's photos
   without faces and from noise and gradients, and its 100 non-faces pasted the same way. A
   detection finds a face when their IoU is at least 0.5 (one detection per face, greedy by IoU);
   every other detection is a false positive. Milliseconds per 640x480 scene: the fastest of three
   tries, median over eight scenes, each library with its default threads.
2. The crop margin around the detector's box (runtime.faces.crops) against the FER-style crop of
   the astronaut's face (scripts/fer_minixception.py), through the bundled FER2013 model, on the
   astronaut photo at several scales and positions in 640x480 scenes; plus the `fer` package's
   crop (the Haar box, 10 px more on each side, padded with the image's bottom-row mean).
3. Video libraries: decoding speed of a 640x480 30 fps clip, the codecs each writes in .mp4, GIF
   frame times, an HTTP URL, a truncated file, camera and RTSP inputs in the build, size, license.

MediaPipe needs opencv-contrib-python, and PyAV and imageio-ffmpeg are not gapcam's dependencies:
they run in their own virtual environments, this file run there as a subprocess (`--worker`):

    python3.11 -m venv /tmp/mp-venv && /tmp/mp-venv/bin/pip install mediapipe==0.10.14
    python3.11 -m venv /tmp/video-venv && /tmp/video-venv/bin/pip install av imageio-ffmpeg

A candidate whose environment is missing is reported as not measured. `--wheels DIR` (wheels from
`pip download --no-deps`) adds each library's download size. Only numpy and the standard library
are imported at the top: the workers run where gapcam is not installed.
"""

from __future__ import annotations

import argparse
import glob
import http.server
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

import numpy as np

SCENE = (480, 640)  # height, width: a VGA frame
FACE_SIDES = (48, 80, 128)  # pasted face sides in pixels
GRIDS = {48: (5, 4), 80: (4, 3), 128: (3, 2)}  # columns, rows of cells per scene, one face per cell
IOU_MATCH = 0.5  # a detection finds a face at this IoU or more
ASTRONAUT_TRUE_FACE = (180, 66, 276, 172)  # the astronaut's face, hairline to chin, cheek to cheek (checked by eye)
BACKGROUNDS = ("coffee", "rocket", "brick", "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "motorcycle")
GAPCAM_DEPENDENCIES = {"numpy", "pillow", "click"}  # installed with gapcam anyway: not counted in a candidate's size
MARGINS = (0.0, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
FER_OFFSET = 10  # the `fer` package's crop: its Haar box, 10 px more on each side (fer.FER offsets=(10, 10))
FER_PADDING = 40  # fer pads the gray image by 40 px with its bottom rows' mean before cropping
MARGIN_SCALES = (0.4, 0.6, 0.8, 1.0, 1.25)  # the astronaut photo's scale in the margin study's scenes
MARGIN_PLACES = ((0.5, 0.5), (0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0))  # the reference crop's place in the free range
HOPPER_TRUE_FACE = (172, 135, 352, 332)  # Grace Hopper's face in matplotlib's grace_hopper.jpg, under the cap to chin (checked by eye)
COMMON = (1.1, 5, 24)  # every cascade's settings in the comparison: scale factor, min neighbours (OpenCV's and fer's), min face
CASCADES = {"default": "haarcascade_frontalface_default.xml", "alt2": "haarcascade_frontalface_alt2.xml"}  # OpenCV's Haar cascades
HAAR_SETTINGS = (  # (scale factor, min neighbours, min face, max side): mostly one at a time around COMMON at gapcam's 640 px
    (1.05, 5, 24, 640),
    (1.1, 5, 24, 640),
    (1.2, 5, 24, 640),
    (1.3, 5, 24, 640),
    (1.1, 3, 24, 640),
    (1.1, 8, 24, 640),
    (1.1, 5, 40, 640),
    (1.1, 5, 24, 320),
    (1.2, 5, 40, 640),  # both speed-ups at once
)
GIF_DURATIONS = (100, 200, 50, 300, 150, 40, 120, 80)  # ms per frame of the GIF made here
CLIP_FRAMES, CLIP_FPS = 300, 30
OPENCV_FOURCCS = ("avc1", "H264", "hvc1", "mp4v", "vp09", "av01")
FFMPEG_ENCODERS = ("libx264", "libopenh264", "libx265", "mpeg4", "libvpx-vp9", "libsvtav1")
WRITE_KINDS = ("H.264", "H.265", "MPEG-4 part 2", "VP9", "AV1")
WRITE_KIND = {  # the codec each encoder or OpenCV fourcc asks for
    "avc1": "H.264",
    "H264": "H.264",
    "libx264": "H.264",
    "libopenh264": "H.264",
    "hvc1": "H.265",
    "libx265": "H.265",
    "mp4v": "MPEG-4 part 2",
    "mpeg4": "MPEG-4 part 2",
    "vp09": "VP9",
    "libvpx-vp9": "VP9",
    "av01": "AV1",
    "libsvtav1": "AV1",
}


# Shared by the main process and the workers (numpy and the standard library only).


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wanted(requirement: str) -> bool:
    """Whether a Requires-Dist line applies here without extras (packaging's markers where importable)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        try:
            from pip._vendor.packaging.requirements import Requirement
        except ImportError:
            return "extra ==" not in requirement
    marker = Requirement(requirement).marker
    return marker is None or marker.evaluate({"extra": ""})


def installed_size(distribution: str) -> dict:
    """Bytes on disk of `distribution` and of it with the dependencies it pulls in that gapcam does not."""
    from importlib import metadata

    sizes, todo = {}, [distribution]
    while todo:
        name = normalized(todo.pop())
        if name in sizes or name in GAPCAM_DEPENDENCIES:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        sizes[name] = sum(path.locate().stat().st_size for path in dist.files or () if Path(path.locate()).is_file())
        todo += [re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", line).group(0) for line in dist.requires or () if wanted(line)]
    own = sizes.pop(normalized(distribution), 0)
    return {"version": metadata.version(distribution), "own": own, "total": own + sum(sizes.values()), "dependencies": sizes}


def ffmpeg_license(folder: str | Path) -> dict:
    """The license string and configure line FFmpeg compiled into the libavcodec a wheel bundles,
    and the GPL libraries bundled beside it."""
    found = sorted(glob.glob(str(Path(folder) / "libavcodec*")))
    if not found:
        return {"license": "no libavcodec found", "configure": "", "gpl_libraries": []}
    binary = Path(found[0]).read_bytes()
    license_line = re.search(rb"libavcodec license: ([ -~]+)", binary)
    configure = re.search(rb"--prefix[ -~]{20,6000}", binary)
    libraries = sorted({Path(p).name.split("-")[0].split(".")[0] for p in glob.glob(str(Path(folder) / "*.so*"))})
    return {
        "license": license_line.group(1).decode() if license_line else "not found",
        "configure": configure.group(0).decode() if configure else "",
        "gpl_libraries": [lib for lib in libraries if lib in ("libx264", "libx265", "libxvidcore", "libfdk-aac")],
    }


def timed(fn, *args):
    """(fn's result, seconds it took)."""
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def frame_starts(durations_ms) -> list[float]:
    return [float(sum(durations_ms[:i])) for i in range(len(durations_ms))]


def first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:160]


def speed_ms(detectors: dict, frames: list[np.ndarray], rounds: int) -> dict[str, float]:
    """Each detector's milliseconds per frame: the fastest of `rounds` tries per frame (what the
    detector costs, not what other processes cost it), median over the frames. Detectors take turns
    frame by frame, so a change in the machine's load falls on all of them."""
    best = {name: [float("inf")] * len(frames) for name in detectors}
    for detect in detectors.values():
        detect(frames[0])  # warm-up
    for _ in range(rounds):
        for k, frame in enumerate(frames):
            for name, detect in detectors.items():
                _, seconds = timed(detect, frame)
                best[name][k] = min(best[name][k], seconds * 1e3)
    return {name: statistics.median(times) for name, times in best.items()}


def boxes_on(detect, images) -> list[list[list[int]]]:
    return [np.asarray(detect(image), dtype=np.int64).reshape(-1, 4).tolist() for image in images]


# MediaPipe, in its own environment.


def mediapipe_worker(job: dict) -> dict:
    """Both of MediaPipe's face detection models (short range, model 0; full range, model 1) on the
    job's scenes (gray, given as RGB), the real photos and the astronaut scenes: boxes, and ms per frame."""
    import mediapipe as mp

    data = np.load(job["scenes"])
    scenes = [np.stack([gray] * 3, axis=-1) for gray in data["scenes"]]
    models = {model: mp.solutions.face_detection.FaceDetection(model_selection=int(model), min_detection_confidence=0.5) for model in "01"}

    def detector(model: str):
        def detect(rgb: np.ndarray) -> list[list[int]]:
            height, width = rgb.shape[:2]
            boxes = []
            for detection in models[model].process(np.ascontiguousarray(rgb)).detections or []:
                box = detection.location_data.relative_bounding_box
                x0, y0 = max(0, round(box.xmin * width)), max(0, round(box.ymin * height))
                x1, y1 = min(width, round((box.xmin + box.width) * width)), min(height, round((box.ymin + box.height) * height))
                if x1 > x0 and y1 > y0:
                    boxes.append([x0, y0, x1, y1])
            return boxes

        return detect

    detectors = {model: detector(model) for model in models}
    out = {"size": installed_size("mediapipe"), "version": mp.__version__, "models": {}}
    for model, detect in detectors.items():
        out["models"][model] = {
            "boxes": boxes_on(detect, scenes),
            "photos": boxes_on(detect, [data[f"photo_{i}"] for i in range(job["photos"])]),
            "astronauts": boxes_on(detect, data["astronauts"]),
        }
    for model, ms in speed_ms(detectors, [scenes[k] for k in job["speed_frames"]], job["rounds"]).items():
        out["models"][model]["ms"] = ms
    for model in models.values():
        model.close()
    return out


# PyAV and imageio-ffmpeg, in their own environment.


def video_worker(job: dict) -> dict:
    """PyAV's and imageio-ffmpeg's answers to the video study's questions (see `video_study`)."""
    folder = Path(job["folder"])
    out = {}
    try:
        out["pyav"] = pyav_study(job, folder)
    except ImportError as error:
        out["pyav"] = {"missing": first_line(error)}
    try:
        out["imageio-ffmpeg"] = imageio_ffmpeg_study(job, folder)
    except ImportError as error:
        out["imageio-ffmpeg"] = {"missing": first_line(error)}
    return out


def pyav_study(job: dict, folder: Path) -> dict:
    import av

    def decode(path: str) -> int:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame and slice threads, as a video reader should ask
            return sum(1 for frame in container.decode(stream) if frame.to_ndarray(format="rgb24") is not None)

    def write(path: Path, codec: str, frames: list[np.ndarray], faststart: bool = False) -> None:
        options = {"movflags": "faststart"} if faststart else {}
        with av.open(str(path), "w", options=options) as container:
            stream = container.add_stream(codec, rate=CLIP_FPS)
            stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
            for rgb in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            container.mux(stream.encode())

    def probe(path: Path) -> tuple[str, int]:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            decoder = stream.codec_context.name
            return {"libdav1d": "av1"}.get(decoder, decoder), sum(1 for _ in container.decode(stream))

    with av.open(job["clips"]["mp4v"]) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    h264 = folder / "clip_h264.mp4"  # the H.264 clip every library decodes (OpenCV cannot write one)
    write(h264, "libx264", frames, faststart=True)
    truncated = folder / "clip_h264_truncated.mp4"
    cut = h264.stat().st_size // 2
    truncated.write_bytes(h264.read_bytes()[:cut])
    with av.open(str(h264)) as container:  # the frames whose bytes all lie before the cut
        kept = sum(1 for packet in container.demux(video=0) if packet.size and packet.pos is not None and packet.pos + packet.size <= cut)
    clips = {**job["clips"], "h264": str(h264)}
    out: dict = {
        "version": av.__version__,
        "size": installed_size("av"),
        "made": {"h264": str(h264), "truncated": str(truncated)},
        "kept": kept,
    }
    out["ffmpeg"] = {**ffmpeg_license(Path(av.__file__).parent.parent / "av.libs"), "versions": av.library_versions}
    out["decode_fps"] = {name: decode_fps(decode, path, job["passes"]) for name, path in clips.items()}
    out["writes"] = {}
    for codec in FFMPEG_ENCODERS:
        path = folder / f"pyav_{codec}.mp4"
        try:
            _, seconds = timed(write, path, codec, frames[: job["write_frames"]])
            name, count = probe(path)
            out["writes"][codec] = {"ok": count == job["write_frames"], "codec": name, "fps": job["write_frames"] / seconds}
        except Exception as error:  # any failure to encode is the answer
            out["writes"][codec] = {"ok": False, "error": first_line(error)}
    out["gifs"] = {}
    for name, path in job["gifs"].items():
        with av.open(path) as container:
            times = [round(float(frame.time) * 1e3, 1) for frame in container.decode(video=0)]
        out["gifs"][name] = {"frames": len(times), "starts_ms": times}
    out["http"] = count_or_error(decode, job["url"])
    out["truncated"] = count_or_error(decode, str(truncated))
    with av.open(str(truncated)) as container:
        out["truncated"]["announced"] = container.streams.video[0].frames
    out["inputs"] = {"v4l2": "video4linux2,v4l2" in av.formats_available, "rtsp": "rtsp" in av.formats_available}
    return out


def imageio_ffmpeg_study(job: dict, folder: Path) -> dict:
    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()

    def decode(path: str) -> int:
        reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
        meta = next(reader)
        width, height = meta["size"]
        return sum(1 for raw in reader if np.frombuffer(raw, np.uint8).reshape(height, width, 3) is not None)

    def write(path: Path, codec: str, frames: list[np.ndarray]) -> None:
        writer = imageio_ffmpeg.write_frames(str(path), (frames[0].shape[1], frames[0].shape[0]), fps=CLIP_FPS, codec=codec)
        writer.send(None)
        for rgb in frames:
            writer.send(np.ascontiguousarray(rgb))
        writer.close()

    def meta_and_count(path: str) -> tuple[dict, int]:
        reader = imageio_ffmpeg.read_frames(path)
        meta = next(reader)
        return meta, sum(1 for _ in reader)

    version = subprocess.run([exe, "-hide_banner", "-version"], capture_output=True, text=True).stdout
    license_text = subprocess.run([exe, "-hide_banner", "-L"], capture_output=True, text=True).stdout
    demuxers = subprocess.run([exe, "-hide_banner", "-demuxers"], capture_output=True, text=True).stdout.split()
    configure = re.search(r"configuration: (.*)", version)
    out: dict = {
        "version": imageio_ffmpeg.__version__,
        "size": installed_size("imageio-ffmpeg"),
        "ffmpeg": {
            "version": imageio_ffmpeg.get_ffmpeg_version(),
            "binary_bytes": Path(exe).stat().st_size,
            "license": license_summary(license_text),
            "configure": configure.group(1) if configure else "",
        },
    }
    clips = {**job["clips"], "h264": str(folder / "clip_h264.mp4")}
    out["decode_fps"] = {name: decode_fps(decode, path, job["passes"]) for name, path in clips.items() if Path(path).is_file()}
    frames = []
    reader = imageio_ffmpeg.read_frames(job["clips"]["mp4v"])
    width, height = next(reader)["size"]
    for raw in reader:
        frames.append(np.frombuffer(raw, np.uint8).reshape(height, width, 3))
        if len(frames) == job["write_frames"]:
            reader.close()
            break
    out["writes"] = {}
    for codec in FFMPEG_ENCODERS:
        path = folder / f"imageio_{codec}.mp4"
        try:
            _, seconds = timed(write, path, codec, frames)
            meta, count = meta_and_count(str(path))
            out["writes"][codec] = {"ok": count == len(frames), "codec": meta["codec"], "fps": len(frames) / seconds}
        except Exception as error:  # any failure to encode is the answer
            out["writes"][codec] = {"ok": False, "error": first_line(error)}
    out["gifs"] = {}
    for name, path in job["gifs"].items():
        meta, count = meta_and_count(path)
        out["gifs"][name] = {"frames": count, "starts_ms": [round(i * 1e3 / meta["fps"], 1) for i in range(count)], "fps": meta["fps"]}
    out["http"] = count_or_error(decode, job["url"])
    truncated = folder / "clip_h264_truncated.mp4"
    out["truncated"] = count_or_error(decode, str(truncated)) if truncated.is_file() else {"error": "not made (needs PyAV)"}
    if truncated.is_file():
        meta, _ = meta_and_count(str(truncated))
        out["truncated"]["announced"] = round(meta["duration"] * meta["fps"])
    out["inputs"] = {"v4l2": "v4l2" in demuxers or "video4linux2,v4l2" in demuxers, "rtsp": "rtsp" in demuxers}
    return out


def license_summary(text: str) -> str:
    """'GNU General Public License version 3 or later' out of `ffmpeg -L`'s text."""
    flat = " ".join(text.split())
    found = re.search(r"GNU (Lesser )?General Public License.*?version ([0-9.]+)( of the License, or \(at your option\) any later)?", flat)
    if not found:
        return flat[:80]
    return f"GNU {found.group(1) or ''}General Public License version {found.group(2)}{' or later' if found.group(3) else ''}"


def decode_fps(decode, path: str, passes: int) -> dict:
    """Frames decoded to RGB arrays and the median frames per second over `passes` passes (after one
    to warm up: the first pass also loads libraries and fills caches)."""
    runs = [timed(decode, path) for _ in range(passes + 1)][1:]
    return {"frames": runs[0][0], "fps": statistics.median(count / seconds for count, seconds in runs)}


def count_or_error(decode, path: str) -> dict:
    try:
        return {"frames": decode(path)}
    except Exception as error:  # how a library fails is the answer
        return {"error": first_line(error)}


def run_worker(python: str, kind: str, job: dict, folder: Path, timeout: float) -> dict:
    """This file's `--worker KIND` in another environment; {"missing": why} where it does not run."""
    if not Path(python).is_file():
        return {"missing": f"{python} not found"}
    job_path, out_path = folder / f"{kind}_job.json", folder / f"{kind}_out.json"
    job_path.write_text(json.dumps(job))
    done = subprocess.run(
        [python, __file__, "--worker", kind, str(job_path), str(out_path)], capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return {"missing": lines[-1] if lines else f"exit status {done.returncode}"}
    return json.loads(out_path.read_text())


# The main process (gapcam's environment).


def photo(name: str) -> np.ndarray:
    """uint8 RGB HxWx3: one of scikit-image's photos, resized to cover SCENE and centre-cropped."""
    from PIL import Image
    from skimage import data

    pixels = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    image = Image.fromarray(pixels).convert("RGB")
    height, width = SCENE
    scale = max(width / image.width, height / image.height)
    image = image.resize((round(image.width * scale + 0.5), round(image.height * scale + 0.5)), Image.Resampling.BILINEAR)
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return np.asarray(image.crop((left, top, left + width, top + height)))


def synthetic(kind: str, rng: np.random.Generator) -> np.ndarray:
    """uint8 RGB: smoothed noise or a two-colour gradient, the size of SCENE."""
    from PIL import Image, ImageFilter

    height, width = SCENE
    if kind == "noise":
        noise = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).filter(ImageFilter.GaussianBlur(3))
        return np.asarray(noise)
    ramp = np.linspace(0.0, 1.0, width)[None, :, None] * np.linspace(0.3, 1.0, height)[:, None, None]
    low, high = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    return (low + (high - low) * ramp).round().clip(0, 255).astype(np.uint8)


def backgrounds(count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`count` RGB scenes without faces: scikit-image's photos in turn, every fourth one synthetic."""
    photos = [photo(name) for name in BACKGROUNDS]
    out = []
    for i in range(count):
        out.append(synthetic(("noise", "gradient")[(i // 4) % 2], rng) if i % 4 == 3 else photos[i % len(photos)])
    return out


def pasted_scenes(crops: list[np.ndarray], rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """Gray 640x480 scenes with `crops` (25x25 gray) upscaled to each of FACE_SIDES, one per grid cell at
    a random place in it: (scenes, [n, 4] pasted boxes per scene, face side per scene)."""
    from PIL import Image

    height, width = SCENE
    layouts = [(side, start) for side in FACE_SIDES for start in range(0, len(crops), GRIDS[side][0] * GRIDS[side][1])]
    grounds = backgrounds(len(layouts), rng)
    scenes, boxes, sides = [], [], []
    for (side, start), ground in zip(layouts, grounds, strict=True):
        columns, rows = GRIDS[side]
        scene = np.asarray(Image.fromarray(ground).convert("L")).copy()
        placed = []
        for cell, crop in enumerate(crops[start : start + columns * rows]):
            cell_w, cell_h = width // columns, height // rows
            x = (cell % columns) * cell_w + int(rng.integers(0, cell_w - side + 1))
            y = (cell // columns) * cell_h + int(rng.integers(0, cell_h - side + 1))
            scene[y : y + side, x : x + side] = np.asarray(Image.fromarray(crop).resize((side, side), Image.Resampling.BICUBIC))
            placed.append((x, y, x + side, y + side))
        scenes.append(scene)
        boxes.append(np.asarray(placed, dtype=np.int64).reshape(-1, 4))
        sides.append(side)
    return scenes, boxes, sides


def lfw_crops() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """lfw_subset as uint8: (its 100 faces, its 100 non-faces)."""
    from skimage import data

    crops = [(crop * 255).round().astype(np.uint8) for crop in data.lfw_subset()]
    return crops[:100], crops[100:]


def iou(a, b) -> float:
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match(truths: np.ndarray, found) -> tuple[np.ndarray, int, list[float]]:
    """Greedy one-to-one matching by IoU >= IOU_MATCH: (which truths were found, the detections that
    found none, the matched pairs' IoUs)."""
    pairs = sorted(((iou(t, f), i, j) for i, t in enumerate(truths) for j, f in enumerate(found)), reverse=True)
    hit, used, ious = np.zeros(len(truths), bool), np.zeros(len(found), bool), []
    for value, i, j in pairs:
        if value >= IOU_MATCH and not hit[i] and not used[j]:
            hit[i] = used[j] = True
            ious.append(value)
    return hit, int((~used).sum()), ious


def run_detector(detect, sets: dict) -> dict:
    """`detect(gray or RGB uint8 array) -> boxes` on every image of each set: {set: boxes per image}."""
    return {name: boxes_on(detect, images) for name, images in sets.items()}


def score(run: dict, truths: dict, sides: list[int], faces: int) -> dict:
    """Recall per face side and overall, the matched detections' median IoU, false positives per
    scene (face scenes, non-face scenes), each real photo's IoU and their false positives, and in how
    many astronaut scenes her face was found. Scenes [0, faces) hold the real faces."""
    found = {side: [] for side in FACE_SIDES}
    matched, false_faces, false_other = [], [], []
    for k, boxes in enumerate(run["boxes"]):
        if k < faces:
            hit, false, ious = match(truths["boxes"][k], boxes)
            found[sides[k]] += hit.tolist()
            matched += ious
            false_faces.append(false)
        else:
            false_other.append(len(boxes))
    photos, photo_false = [], 0
    for face, boxes in zip(truths["photos"], run["photos"], strict=True):
        hit, false, ious = match(np.asarray([face]), boxes)
        photos.append(f"{ious[0]:.2f}" if hit[0] else "missed")
        photo_false += false
    astronauts = [match(np.asarray([face]), boxes)[0][0] for face, boxes in zip(truths["astronauts"], run["astronauts"], strict=True)]
    return {
        "recall": {side: float(np.mean(hits)) for side, hits in found.items()},
        "recall_all": float(np.mean(sum(found.values(), []))),
        "matched_iou": float(np.median(matched)) if matched else float("nan"),
        "fp_faces": float(np.mean(false_faces)),
        "fp_other": float(np.mean(false_other)),
        "photos": f"{', '.join(photos)} / {photo_false}",
        "astronauts": f"{sum(astronauts)} / {len(astronauts)}",
    }


def cascade_file(folder: Path) -> Path:
    """scikit-image's LBP cascade, readable by OpenCV: scikit-image's copy misspells one tag
    (`featuhreParams`), which its own reader ignores and OpenCV's refuses."""
    import skimage.data

    source = Path(skimage.data.__file__).parent / "lbpcascade_frontalface_opencv.xml"
    fixed = folder / "lbpcascade_frontalface.xml"
    fixed.write_text(source.read_text().replace("featuhreParams", "featureParams"))
    return fixed


def opencv_detect(cascade: str | Path, scale_factor: float, min_neighbors: int, min_face: int, max_side: int = 640):
    """gapcam's own HaarFaceDetector (runtime.faces) with an OpenCV cascade file, on uint8 arrays."""
    from PIL import Image

    from runtime.faces import HaarFaceDetector

    detector = HaarFaceDetector(cascade, scale_factor=scale_factor, min_neighbors=min_neighbors, min_face=min_face, max_side=max_side)
    return lambda pixels: detector.detect(Image.fromarray(pixels))


def skimage_detect(scale_factor: float, min_face: int):
    """scikit-image's own LBP cascade reader (`skimage.feature.Cascade`), its default neighbour count."""
    import skimage.data
    from PIL import Image
    from skimage.feature import Cascade

    detector = Cascade(str(Path(skimage.data.__file__).parent / "lbpcascade_frontalface_opencv.xml"))

    def detect(pixels: np.ndarray) -> list[list[int]]:
        gray = np.asarray(Image.fromarray(pixels).convert("L"))
        found = detector.detect_multi_scale(
            img=gray, scale_factor=scale_factor, step_ratio=1, min_size=(min_face, min_face), max_size=gray.shape[:2]
        )
        return [[d["c"], d["r"], d["c"] + d["width"], d["r"] + d["height"]] for d in found]

    return detect


def with_dependencies(size: dict) -> str:
    """'971 MB with its 22 dependencies (largest: jaxlib 280 MB, ...)' of an installed_size answer."""
    if not size["dependencies"]:
        return mib(size["total"])
    largest = sorted(size["dependencies"].items(), key=lambda item: -item[1])[:3]
    named = ", ".join(f"{name} {mib(bytes_)}" for name, bytes_ in largest)
    return f"{mib(size['total'])} with its {len(size['dependencies'])} dependencies (largest: {named})"


def mib(size: int) -> str:
    return f"{size / 2**20:.0f} MB" if size >= 2**20 else f"{size / 2**20:.2f} MB"


def wheel_size(wheels: Path | None, distribution: str, version: str) -> str:
    if wheels is None:
        return "n/a"
    stem = re.sub(r"[-.]+", "_", distribution).lower()
    found = [p for p in wheels.glob("*.whl") if p.name.lower().startswith(f"{stem}-{version}-")]
    return mib(found[0].stat().st_size) if found else "n/a"


def face_side(scale: float) -> int:
    """The astronaut's face's side in pixels, her photo scaled by `scale`."""
    return round((ASTRONAUT_TRUE_FACE[2] - ASTRONAUT_TRUE_FACE[0]) * scale)


def recall_cells(s: dict) -> str:
    """A score's recall per face side, then overall, as table cells."""
    per_side = " / ".join(f"{s['recall'][side]:.2f}" for side in FACE_SIDES)
    return f"{per_side} | {s['recall_all']:.3f}"


def real_photos() -> list[tuple[str, np.ndarray, tuple[int, int, int, int]]]:
    """(name, RGB pixels, the face's box) of the real one-face photos packages ship: scikit-image's
    astronaut, and matplotlib's Grace Hopper where matplotlib is installed."""
    from skimage import data

    photos = [("astronaut", data.astronaut(), ASTRONAUT_TRUE_FACE)]
    try:
        import matplotlib.cbook
        from PIL import Image

        with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as image:
            photos.append(("Grace Hopper", np.asarray(image.convert("RGB")), HOPPER_TRUE_FACE))
    except ImportError:
        pass
    return photos


def detector_study(args, folder: Path, lines: list[str]) -> None:
    import cv2

    rng = np.random.default_rng(0)
    faces, others = lfw_crops()
    if args.quick:
        faces, others = faces[:30], others[:30]
    face_scenes, pasted, sides = pasted_scenes(faces, rng)
    other_scenes, _, _ = pasted_scenes(others, rng)
    scenes, count = face_scenes + other_scenes, len(face_scenes)
    photos = real_photos()
    astronauts = astronaut_scenes(args.quick)[1:]  # the photo itself is among `photos`
    sets = {"boxes": scenes, "photos": [pixels for _, pixels, _ in photos], "astronauts": [np.asarray(a["image"]) for a in astronauts]}
    truths = {"boxes": pasted, "photos": [face for *_, face in photos], "astronauts": [a["face"] for a in astronauts]}
    speed_frames = list(range(0, len(scenes), max(1, len(scenes) // 8)))[:8]  # 640x480 scenes with and without faces
    rounds = 2 if args.quick else 3

    def scored(detect) -> dict:
        return score(run_detector(detect, sets), truths, sides, count)

    haar = Path(cv2.data.haarcascades)
    opencv, skimage_size = installed_size("opencv-python-headless"), installed_size("scikit-image")
    in_opencv = f"{mib(opencv['own'])} (opencv-python-headless {opencv['version']})"
    haar_license, lbp_license = "Intel License (BSD-3) cascade; OpenCV Apache-2.0", "OpenCV's cascade (BSD-3); OpenCV Apache-2.0"
    skimage_scale = 1.2  # scikit-image's documented example; its pure-Python pyramid is slow at 1.1
    candidates = {  # label: (kind, license, installed, detect)
        "OpenCV Haar `frontalface_default`": (
            "Viola-Jones, Haar features (the `fer` package's)",
            haar_license,
            in_opencv,
            opencv_detect(haar / CASCADES["default"], *COMMON),
        ),
        "OpenCV Haar `frontalface_alt2`": (
            "Viola-Jones, Haar features, tree stages",
            haar_license,
            in_opencv,
            opencv_detect(haar / CASCADES["alt2"], *COMMON),
        ),
        "OpenCV LBP cascade (scikit-image's file)": (
            "Viola-Jones, LBP features",
            lbp_license,
            in_opencv,
            opencv_detect(cascade_file(folder), *COMMON),
        ),
        "`skimage.feature.Cascade` (same LBP file)": (
            "Viola-Jones, LBP features, scikit-image's reader",
            "BSD-3-Clause",
            f"{mib(skimage_size['own'])} (scikit-image {skimage_size['version']}); {with_dependencies(skimage_size)}",
            skimage_detect(skimage_scale, COMMON[2]),
        ),
    }
    scores = {label: scored(detect) for label, (*_, detect) in candidates.items()}
    speeds = speed_ms({label: detect for label, (*_, detect) in candidates.items()}, [scenes[k] for k in speed_frames], rounds)
    rows = [
        (label, kind, license_text, size, {**scores[label], "ms": speeds[label]})
        for label, (kind, license_text, size, _) in candidates.items()
    ]

    arrays = {f"photo_{i}": pixels for i, pixels in enumerate(sets["photos"])}
    np.savez(folder / "scenes.npz", scenes=np.stack(scenes), astronauts=np.stack(sets["astronauts"]), **arrays)
    job = {"scenes": str(folder / "scenes.npz"), "photos": len(photos), "speed_frames": speed_frames, "rounds": rounds}
    mediapipe = run_worker(args.mediapipe_python, "mediapipe", job, folder, 900)
    notes = []
    if "missing" in mediapipe:
        notes.append(f"MediaPipe not measured: {mediapipe['missing']} (its environment: `{args.mediapipe_python}`).")
    else:
        size = mediapipe["size"]
        installed = f"{mib(size['own'])} (mediapipe {size['version']}); {with_dependencies(size)}"
        for model, label in (("0", "short-range model"), ("1", "full-range model")):
            run = mediapipe["models"][model]
            s = {**score(run, truths, sides, count), "ms": run["ms"]}
            rows.append((f"MediaPipe face detection, {label}", "BlazeFace (single-shot CNN, TFLite)", "Apache-2.0", installed, s))

    lines += [
        "### Face detectors",
        "",
        f"{len(faces)} lfw_subset faces pasted at {', '.join(map(str, FACE_SIDES))} px into {count} gray 640x480 scenes "
        f"({len(FACE_SIDES) * len(faces)} faces); its {len(others)} non-faces the same way into {len(other_scenes)} scenes. "
        f"OpenCV cascades: scale factor {COMMON[0]}, min neighbours {COMMON[1]}, min face {COMMON[2]} px; scikit-image: scale "
        f"factor {skimage_scale}, min face {COMMON[2]} px, its default neighbour count; MediaPipe: min confidence 0.5. "
        f"Photos ({', '.join(name for name, *_ in photos)}): the IoU of the detection matched with the face's box (or missed) "
        f"/ their other detections. Astronaut scenes: in how many of the crop study's {len(astronauts)} scenes (her photo at "
        f"x{', x'.join(map(str, MARGIN_SCALES))}, her face {face_side(MARGIN_SCALES[0])} to {face_side(MARGIN_SCALES[-1])} px) "
        "her face was found. Median IoU: of the matched detections with the pasted faces. ms: per 640x480 scene, "
        f"the fastest of {rounds} tries, median over {len(speed_frames)} scenes; each library with its default threads.",
        "",
        "| detector | kind | license | installed | photos | astronaut scenes | recall 48 / 80 / 128 px | recall "
        "| median IoU | false per face scene | false per non-face scene | ms per 640x480 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, kind, license_text, size, s in rows:
        lines.append(
            f"| {label} | {kind} | {license_text} | {size} | {s['photos']} | {s['astronauts']} | {recall_cells(s)} "
            f"| {s['matched_iou']:.2f} | {s['fp_faces']:.2f} | {s['fp_other']:.2f} | {s['ms']:.1f} |"
        )
    yunet = sorted(p.name for p in Path(cv2.__file__).parent.parent.rglob("*yunet*"))
    notes.append(
        f"YuNet: `cv2.FaceDetectorYN` is {'present' if hasattr(cv2, 'FaceDetectorYN') else 'absent'} in OpenCV {cv2.__version__}; "
        f"its model file: {', '.join(yunet) if yunet else 'in no installed package'} (it comes from the opencv_zoo repository), "
        "so not measured."
    )
    lines += ["", *notes, ""]

    settings = (HAAR_SETTINGS[1], HAAR_SETTINGS[2], HAAR_SETTINGS[-1]) if args.quick else HAAR_SETTINGS
    detectors = {(name, *setting): opencv_detect(haar / CASCADES[name], *setting) for name in CASCADES for setting in settings}
    speeds = speed_ms(detectors, [scenes[k] for k in speed_frames], rounds)
    lines += [
        "### OpenCV's Haar cascades: their parameters",
        "",
        "Same scenes and columns. Min face: the smallest face side searched, in pixels of the image searched; max side: "
        "gapcam's detector searches the image downscaled to at most this many pixels on its longer side.",
        "",
        "| cascade | scale factor | min neighbours | min face | max side | photos | astronaut scenes | recall 48 / 80 / 128 px | recall "
        "| false per face scene | false per non-face scene | ms per 640x480 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, detect in detectors.items():
        s = scored(detect)
        lines.append(
            f"| {' | '.join(map(str, key))} | {s['photos']} | {s['astronauts']} | {recall_cells(s)} "
            f"| {s['fp_faces']:.2f} | {s['fp_other']:.2f} | {speeds[key]:.1f} |"
        )
    lines.append("")


def astronaut_scenes(quick: bool) -> list[dict]:
    """The astronaut photo itself, then pasted at MARGIN_SCALES with the FER-style reference crop at
    each of MARGIN_PLACES in 640x480 photo scenes: RGB image, reference crop box, her face's box."""
    from PIL import Image
    from skimage import data

    from scripts.fer_minixception import ASTRONAUT_FACE

    astronaut = Image.fromarray(data.astronaut())
    out = [{"image": astronaut, "reference": ASTRONAUT_FACE, "face": ASTRONAUT_TRUE_FACE, "label": "photo"}]
    grounds = [photo(name) for name in BACKGROUNDS]
    height, width = SCENE
    places = MARGIN_PLACES[:2] if quick else MARGIN_PLACES
    for i, (scale, (fx, fy)) in enumerate((s, p) for s in MARGIN_SCALES for p in places):
        pasted = astronaut.resize((round(512 * scale), round(512 * scale)), Image.Resampling.LANCZOS)
        ref = [round(v * scale) for v in ASTRONAUT_FACE]
        x, y = round(fx * (width - (ref[2] - ref[0]))), round(fy * (height - (ref[3] - ref[1])))
        dx, dy = x - ref[0], y - ref[1]  # where the photo's origin lands in the scene
        scene = Image.fromarray(grounds[i % len(grounds)])
        scene.paste(pasted, (dx, dy))
        out.append(
            {
                "image": scene,
                "reference": (ref[0] + dx, ref[1] + dy, ref[2] + dx, ref[3] + dy),
                "face": tuple(round(v * scale) + d for v, d in zip(ASTRONAUT_TRUE_FACE, (dx, dy, dx, dy), strict=True)),
                "label": f"x{scale} at ({fx}, {fy})",
            }
        )
    return out


def fer_crop(gray, face_box) -> tuple[object, tuple[int, int, int, int]]:
    """The `fer` package's crop of a face (fer.FER.detect_emotions): its box made square, FER_OFFSET
    px more on each side, from the gray image padded by FER_PADDING px of its bottom rows' mean."""
    from PIL import ImageOps

    x0, y0, x1, y1 = face_box
    w, h = x1 - x0, y1 - y0
    if h > w:
        x0, w = x0 - (h - w) // 2, h
    elif w > h:
        y0, h = y0 - (w - h) // 2, w
    pixels = np.asarray(gray)
    padded = ImageOps.expand(gray, border=FER_PADDING, fill=int(round(pixels[-2:].mean())))
    box = (x0 - FER_OFFSET, y0 - FER_OFFSET, x0 + w + FER_OFFSET, y0 + h + FER_OFFSET)
    left, top = max(0, box[0] + FER_PADDING), max(0, box[1] + FER_PADDING)
    crop = padded.crop((left, top, box[2] + FER_PADDING, box[3] + FER_PADDING))
    return crop, (left - FER_PADDING, top - FER_PADDING, box[2], box[3])


def cam_agreement(cam, box, ref_cam, ref_box) -> tuple[float, float]:
    """Two CAMs (at their crops' sizes) placed in the scene: Pearson's r over the pixels both crops
    cover, and the distance between their peaks in pixels."""
    x0, y0, x1, y1 = max(box[0], ref_box[0]), max(box[1], ref_box[1]), min(box[2], ref_box[2]), min(box[3], ref_box[3])
    a = cam[y0 - box[1] : y1 - box[1], x0 - box[0] : x1 - box[0]].ravel()
    b = ref_cam[y0 - ref_box[1] : y1 - ref_box[1], x0 - ref_box[0] : x1 - ref_box[0]].ravel()
    peak = np.array(np.unravel_index(np.argmax(cam), cam.shape)) + (box[1], box[0])
    ref_peak = np.array(np.unravel_index(np.argmax(ref_cam), ref_cam.shape)) + (ref_box[1], ref_box[0])
    return float(np.corrcoef(a, b)[0, 1]), float(np.hypot(*(peak - ref_peak)))


def margin_study(args, lines: list[str]) -> None:
    from runtime import CamSession

    session = CamSession("fer2013-minixception")
    scenes = astronaut_scenes(args.quick)
    for cascade in CASCADES:
        margin_table(session, cascade, scenes, lines)


def margin_table(session, cascade: str, scenes: list[dict], lines: list[str]) -> None:
    """The crop margin table for one of OpenCV's Haar cascades (COMMON settings)."""
    from runtime.faces import HaarFaceDetector, face_crop_box

    detector = HaarFaceDetector(CASCADES[cascade], scale_factor=COMMON[0], min_neighbors=COMMON[1], min_face=COMMON[2])
    conventions = [f"margin {m}" for m in MARGINS] + [f"`fer`: box + {FER_OFFSET} px"]
    per = {name: [] for name in conventions}
    missed, whole = [], 0
    for scene in scenes:
        image = scene["image"].convert("L")
        found = detector.detect(image)
        best = max(found.tolist(), key=lambda box: iou(box, scene["face"]), default=None)
        if best is None or iou(best, scene["face"]) < IOU_MATCH:
            missed.append(scene["label"])
            continue
        boxes = [face_crop_box(tuple(best), (image.height, image.width), m) for m in MARGINS]
        crops = [image.crop(box) for box in boxes]
        fer_image, fer_box = fer_crop(image, best)
        crops.append(fer_image)
        boxes.append(fer_box)
        ref, *results = session.run([image.crop(scene["reference"]), *crops])
        for name, box, result in zip(conventions, boxes, results, strict=True):
            correlation, peak = cam_agreement(result.cam, box, ref.cam, scene["reference"])
            whole += tuple(result.box) == (0, 0, box[2] - box[0], box[3] - box[1])
            per[name].append(
                {
                    "crop_iou": iou(box, scene["reference"]),
                    "side": (box[2] - box[0]) / (best[2] - best[0]),
                    "same_label": result.label == ref.label,
                    "prob": float(result.probs[ref.classes[0]]),
                    "distance": 0.5 * float(np.abs(result.probs - ref.probs).sum()),
                    "cam_r": correlation,
                    "peak": peak / (best[2] - best[0]),
                    "ref": (ref.label, ref.prob),
                }
            )
    refs = per[conventions[0]]
    crops_made = sum(len(rows) for rows in per.values())
    lines += [
        f"### Crop margin, OpenCV Haar `frontalface_{cascade}`",
        "",
        f"The astronaut photo itself and {len(scenes) - 1} 640x480 scenes (the photo at x{', x'.join(map(str, MARGIN_SCALES))}, "
        f"its FER-style reference crop at the centre and touching each corner). Detector: OpenCV Haar `frontalface_{cascade}`, "
        f"{COMMON[0]} / {COMMON[1]} / {COMMON[2]} px; it found her face in {len(refs)} of {len(scenes)} scenes"
        + (f" (missed: {', '.join(missed)})" if missed else "")
        + f". The reference crop's answer: {', '.join(sorted({r['ref'][0] for r in refs}))}, "
        f"probability {np.mean([r['ref'][1] for r in refs]):.3f} on average. Probability distance: half the L1 distance "
        "between the crop's and the reference's probability vectors (0: the same answer, 1: disjoint). CAM: the top class's "
        "map, in scene pixels: Pearson's r with the reference's over the pixels both crops cover, and the distance between "
        f"the two maps' peaks in face-box sides. The model's CAM box covered the whole crop in {whole} of {crops_made} crops.",
        "",
        "| crop | crop side / box side | IoU with the reference crop: mean / worst | same label | reference label's prob.: "
        "mean / lowest | probability distance: mean / worst | CAM r: mean / worst | CAM peak distance: mean / worst |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in conventions:
        rows = per[name]

        def stat(key: str, low_is_worse: bool, rows=rows) -> str:
            values = [r[key] for r in rows]
            return f"{np.mean(values):.3f} / {(min(values) if low_is_worse else max(values)):.3f}"

        same, side = f"{sum(r['same_label'] for r in rows)} / {len(rows)}", np.mean([r["side"] for r in rows])
        lines.append(
            f"| {name} | {side:.2f} | {stat('crop_iou', True)} | {same} | {stat('prob', True)} | {stat('distance', False)} "
            f"| {stat('cam_r', True)} | {stat('peak', False)} |"
        )
    lines.append("")


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with byte ranges, as web servers answer them (FFmpeg reads an .mp4's index at
    its end with a range request); quiet."""

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        asked = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        start, end = (int(asked.group(1)), int(asked.group(2) or len(data) - 1)) if asked else (0, len(data) - 1)
        end = min(end, len(data) - 1)
        self.send_response(206 if asked else 200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(max(0, end - start + 1)))
        if asked:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        try:
            self.wfile.write(data[start : end + 1])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the reader had what it wanted

    def log_message(self, *args) -> None:
        pass


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """A local HTTP server for `folder` (stands for a network stream) and its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: RangeHandler(*a, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def make_inputs(folder: Path, quick: bool) -> dict:
    """The clip (OpenCV's mp4v writer: a pan across a photo, the astronaut's face moving over it) and two GIFs."""
    import cv2
    from PIL import Image
    from skimage import data

    from scripts.fer_minixception import ASTRONAUT_FACE

    height, width = SCENE
    ground = np.asarray(Image.fromarray(data.coffee()).resize((900, 600), Image.Resampling.BILINEAR))[60 : 60 + height, :, ::-1]
    x0, y0, x1, y1 = ASTRONAUT_FACE
    face = np.ascontiguousarray(data.astronaut()[y0:y1, x0:x1, ::-1])
    frames = 90 if quick else CLIP_FRAMES
    path = folder / "clip_mp4v.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), CLIP_FPS, (width, height))
    start = time.perf_counter()
    for i in range(frames):
        pan = round((ground.shape[1] - width) * i / (frames - 1))
        frame = np.ascontiguousarray(ground[:, pan : pan + width])
        x = round((width - face.shape[1]) * i / (frames - 1))
        y = round((height - face.shape[0]) * (0.5 + 0.4 * np.sin(i / 15)))
        frame[y : y + face.shape[0], x : x + face.shape[1]] = face
        writer.write(frame)
    writer.release()
    encode_fps = frames / (time.perf_counter() - start)
    rng = np.random.default_rng(1)
    gif_frames = [Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)) for _ in GIF_DURATIONS]
    gif = folder / "durations.gif"
    gif_frames[0].save(gif, save_all=True, append_images=gif_frames[1:], duration=list(GIF_DURATIONS), loop=0)
    import skimage.data

    tiny = Path(skimage.data.__file__).parent / "no_time_for_that_tiny.gif"
    with Image.open(tiny) as image:
        tiny_durations = []
        for k in range(image.n_frames):
            image.seek(k)
            tiny_durations.append(image.info["duration"])
    return {
        "clips": {"mp4v": str(path)},
        "mp4v_encode_fps": encode_fps,
        "gifs": {"durations.gif": str(gif), "no_time_for_that_tiny.gif": str(tiny)},
        "gif_truth": {"durations.gif": frame_starts(GIF_DURATIONS), "no_time_for_that_tiny.gif": frame_starts(tiny_durations)},
    }


def opencv_video(inputs: dict, clips: dict, folder: Path, url: str, passes: int, write_frames: int) -> dict:
    """OpenCV's answers to the video study's questions (see `video_study`); `clips` may hold a
    "truncated" clip beside the ones it decodes for speed."""
    import cv2

    def decode(path: str) -> int:
        capture = cv2.VideoCapture(path)
        if not capture.isOpened():
            raise OSError("cv2.VideoCapture did not open it")
        count = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            count += 1
        capture.release()
        return count

    capture = cv2.VideoCapture(clips["mp4v"])
    frames = [capture.read()[1] for _ in range(write_frames)]
    capture.release()
    writes = {}
    for fourcc in OPENCV_FOURCCS:
        path = folder / f"opencv_{fourcc}.mp4"
        start = time.perf_counter()
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), CLIP_FPS, (SCENE[1], SCENE[0]))
        if not writer.isOpened():
            writes[fourcc] = {"ok": False, "error": "VideoWriter did not open"}
            continue
        for frame in frames:
            writer.write(frame)
        writer.release()
        seconds = time.perf_counter() - start
        back = cv2.VideoCapture(str(path))
        tag = int(back.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode(errors="replace")
        tag = {"FMP4": "mpeg4", "VP90": "vp9", "H264": "h264", "avc1": "h264", "hev1": "hevc", "AV01": "av1"}.get(tag, tag)
        back.release()
        writes[fourcc] = {"ok": decode(str(path)) == write_frames, "codec": tag, "fps": write_frames / seconds}
    gifs = {}
    for name, path in inputs["gifs"].items():
        capture = cv2.VideoCapture(path)
        starts = []
        while capture.read()[0]:
            starts.append(round(capture.get(cv2.CAP_PROP_POS_MSEC), 1))
        capture.release()
        gifs[name] = {"frames": len(starts), "starts_ms": starts}
    libs = Path(cv2.__file__).parent.parent / "opencv_python_headless.libs"
    avformat = sorted(libs.glob("libavformat*"))
    speed = {name: path for name, path in clips.items() if name != "truncated"}
    return {
        "version": cv2.__version__,
        "size": installed_size("opencv-python-headless"),
        "ffmpeg": ffmpeg_license(libs),
        "decode_fps": {name: decode_fps(decode, path, passes) for name, path in speed.items()},
        "writes": writes,
        "gifs": gifs,
        "http": count_or_error(decode, url),
        "truncated": truncated_outcome(decode, clips.get("truncated")),
        "inputs": {
            "v4l2": bool(re.search(r"v4l/v4l2:\s+YES", cv2.getBuildInformation())),
            "rtsp": bool(avformat) and b"RTSP input" in avformat[0].read_bytes(),
        },
    }


def truncated_outcome(decode, path: str | None) -> dict:
    """OpenCV on the truncated clip: the frames read, and the count its container announces."""
    import cv2

    if path is None:
        return {"error": "not made (needs PyAV)"}
    result = count_or_error(decode, path)
    capture = cv2.VideoCapture(path)
    result["announced"] = round(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    return result


def ffmpeg_inside(ffmpeg: dict) -> str:
    """What a library's FFmpeg says of its license: a bundled executable's -L text, or a bundled
    libavcodec's license string and the GPL libraries beside it."""
    if "binary_bytes" in ffmpeg:
        gpl = ", configured --enable-gpl" if "--enable-gpl" in ffmpeg["configure"] else ""
        return f"ffmpeg {ffmpeg['version'].split()[0]} executable ({mib(ffmpeg['binary_bytes'])}): {ffmpeg['license'] or 'n/a'}{gpl}"
    return f"{ffmpeg['license']}; {', '.join(ffmpeg['gpl_libraries']) or 'no GPL libraries'}"


def outcome(result: dict) -> str:
    """'141 of 300 announced frames, no error', or the error."""
    if "frames" not in result:
        return result["error"]
    announced = f" of {result['announced']} announced" if "announced" in result else ""
    return f"{result['frames']}{announced} frames, no error"


def video_study(args, folder: Path, lines: list[str]) -> None:
    inputs = make_inputs(folder, args.quick)
    passes, write_frames = (2, 10) if args.quick else (5, 30)
    server, base = serve(folder)
    try:
        job = {**inputs, "folder": str(folder), "url": f"{base}/clip_mp4v.mp4", "passes": passes, "write_frames": write_frames}
        others = run_worker(args.video_python, "video", job, folder, 900)
        clips = {**inputs["clips"], **others.get("pyav", {}).get("made", {})}  # PyAV adds the H.264 clip and its truncated copy
        opencv = opencv_video(inputs, clips, folder, job["url"], passes, write_frames)
    finally:
        server.shutdown()
    libraries = {"OpenCV (`opencv-python-headless`)": ("opencv-python-headless", opencv)}
    notes = []
    for key, label in (("pyav", "PyAV (`av`)"), ("imageio-ffmpeg", "imageio-ffmpeg")):
        result = others.get(key, others)
        if "missing" in result:
            notes.append(f"{label} not measured: {result['missing']} (its environment: `{args.video_python}`).")
        else:
            libraries[label] = ({"pyav": "av"}.get(key, key), result)
    truth = inputs["gif_truth"]
    lines += [
        "### Video libraries",
        "",
        f"Decoding: a {SCENE[1]}x{SCENE[0]} {CLIP_FPS} fps clip of {opencv['decode_fps']['mp4v']['frames']} frames "
        "(MPEG-4 part 2 from OpenCV's `mp4v` writer; H.264 made from it by PyAV's libx264), decoded to RGB arrays, "
        f"median of {passes} passes (PyAV with `thread_type='AUTO'`). GIF: frames read of the file's frames, and the largest "
        f"error of a frame's start time against the file's own delays ({len(GIF_DURATIONS)} frames of "
        f"{', '.join(map(str, GIF_DURATIONS))} ms made with Pillow; scikit-image's `no_time_for_that_tiny.gif`, "
        f"{len(truth['no_time_for_that_tiny.gif'])} frames). HTTP URL: the mp4v clip from a local HTTP server. "
        f"Truncated: the H.264 clip (index at the front) cut at half its bytes ({others.get('pyav', {}).get('kept', 'n/a')} frames "
        "wholly before the cut). V4L2 and RTSP: whether the build has the input.",
        "",
        "| library | version | installed | wheel | FFmpeg inside: license, GPL libraries | decode mp4v fps | decode H.264 fps "
        "| GIF: frames, worst start error | HTTP URL | truncated .mp4 | V4L2 camera | RTSP |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, (distribution, result) in libraries.items():
        size, decode = result["size"], result["decode_fps"]
        gifs = []
        for name, got in result["gifs"].items():
            if got["frames"] == len(truth[name]):
                worst = max(abs(a - b) for a, b in zip(got["starts_ms"], truth[name], strict=True))
                gifs.append(f"{got['frames']}/{len(truth[name])}, {worst:.0f} ms")
            else:
                gifs.append(f"{got['frames']}/{len(truth[name])}, times n/a")
        cells = [
            label,
            result["version"],
            mib(size["total"]),
            wheel_size(args.wheels, distribution, size["version"]),
            ffmpeg_inside(result["ffmpeg"]),
            *(f"{decode[clip]['fps']:.0f}" if clip in decode else "n/a" for clip in ("mp4v", "h264")),
            "; ".join(gifs),
            outcome(result["http"]),
            outcome(result["truncated"]),
            "yes" if result["inputs"]["v4l2"] else "no",
            "yes" if result["inputs"]["rtsp"] else "no",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", *notes, ""] if notes else [""]
    lines += [
        f"### Writing .mp4 ({write_frames} frames 640x480): encoder asked for, codec read back, frames/s of the whole write",
        "",
        "| library | " + " | ".join(WRITE_KINDS) + " |",
        "| --- |" + " --- |" * len(WRITE_KINDS),
    ]
    for label, (_, result) in libraries.items():
        cells = {kind: [] for kind in WRITE_KINDS}
        for asked, got in result["writes"].items():
            text = f"`{asked}`: {got['codec']}, {got['fps']:.0f} fps" if got.get("ok") else f"`{asked}`: no"
            cells[WRITE_KIND[asked]].append(text)
        lines.append(f"| {label} | " + " | ".join("; ".join(cells[kind]) or "n/a" for kind in WRITE_KINDS) + " |")
    lines += [
        "",
        f"OpenCV's `mp4v` writer making the {opencv['decode_fps']['mp4v']['frames']}-frame clip: {inputs['mp4v_encode_fps']:.0f} frames/s.",
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run: fewer faces, settings, scenes and frames")
    parser.add_argument("--mediapipe-python", default="/tmp/mp-venv/bin/python", help="python of the environment with mediapipe")
    parser.add_argument("--video-python", default="/tmp/video-venv/bin/python", help="python of the environment with av and imageio-ffmpeg")
    parser.add_argument("--wheels", type=Path, help="a folder of downloaded wheels, for their download sizes")
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "JOB", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, job, out = args.worker
        result = {"mediapipe": mediapipe_worker, "video": video_worker}[kind](json.loads(Path(job).read_text()))
        Path(out).write_text(json.dumps(result))
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # scripts/ (ASTRONAUT_FACE)
    import cv2
    import onnxruntime

    from export.int8 import cpu_name

    lines = [
        f"Measured by `python benchmarks/face_study.py{' --quick' if args.quick else ''}` on {cpu_name()}, {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}, OpenCV {cv2.__version__}, onnxruntime {onnxruntime.__version__} (CPU), "
        f"{date.today().isoformat()}.",
        "",
    ]
    with tempfile.TemporaryDirectory(prefix="gapcam-faces-") as work:
        folder = Path(work)
        detector_study(args, folder, lines)
        margin_study(args, lines)
        video_study(args, folder, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
