"""Small datasets written in the exact formats users download, for tests and benchmarks."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def face(rng: np.random.Generator, label: int, side: int = 48) -> np.ndarray:
    """A 48x48 grayscale 'face' with a class-dependent bright bar, so a model can learn something."""
    pixels = rng.integers(40, 120, (side, side)).astype(np.uint8)
    row = 4 + label * 6
    pixels[row : row + 4, 8:40] = 230
    return pixels


def write_fer_csv(path: Path, counts=(("Training", 140), ("PublicTest", 35), ("PrivateTest", 35)), seed: int = 0) -> Path:
    """Kaggle's fer2013.csv layout: emotion, pixels (2304 space-separated values), Usage."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["emotion", "pixels", "Usage"])
        for usage, count in counts:
            for i in range(count):
                label = i % 7
                writer.writerow([label, " ".join(map(str, face(rng, label).ravel())), usage])
    return path


def write_fer_folders(root: Path, per_class: int = 5, seed: int = 0) -> Path:
    """The newer Kaggle copy: train/<emotion>/*.jpg and test/<emotion>/*.jpg."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class * 2), ("test", per_class)):
        for label, emotion in enumerate(FER_LABELS):
            folder = root / split / emotion
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(face(rng, label)).save(folder / f"im{i}.jpg", quality=95)
    return root


def xray(rng: np.random.Generator, pneumonia: bool, size: tuple[int, int], mode: str) -> Image.Image:
    """A chest-X-ray-like picture: two dark lung fields, with a bright patch for pneumonia."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    lungs = np.exp(-(((xx - 0.3) / 0.12) ** 2 + ((yy - 0.5) / 0.3) ** 2)) + np.exp(-(((xx - 0.7) / 0.12) ** 2 + ((yy - 0.5) / 0.3) ** 2))
    pixels = 200 - 140 * lungs + rng.normal(0, 8, (height, width))
    if pneumonia:
        pixels += 90 * np.exp(-(((xx - 0.3) / 0.08) ** 2 + ((yy - 0.6) / 0.1) ** 2))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image.convert(mode)


def write_chest_xray(root: Path, counts=(("train", 8, 24), ("val", 2, 2), ("test", 4, 8)), seed: int = 0, corrupt: bool = True) -> Path:
    """chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg, sizes and modes varied, about 1:3 imbalance."""
    rng = np.random.default_rng(seed)
    sizes = [(320, 260), (300, 300), (410, 330), (280, 350)]
    for split, normal, pneumonia in counts:
        for label, count in (("NORMAL", normal), ("PNEUMONIA", pneumonia)):
            folder = root / "chest_xray" / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                mode = "RGB" if i % 4 == 3 else "L"
                xray(rng, label == "PNEUMONIA", sizes[i % len(sizes)], mode).save(folder / f"person{i}_{label.lower()}.jpeg", quality=90)
    if corrupt:
        (root / "chest_xray" / "train" / "PNEUMONIA" / "broken.jpeg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    return root


def rezip(folder, archive, extra=()):
    """Zip a package folder plus raw (name, bytes, mode) entries that a hostile archive might hold."""
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as out:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            out.write(path, path.relative_to(folder).as_posix())
        for name, data, mode in extra:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            out.writestr(info, data)
    return archive


def copy_package(packed, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(packed.folder, folder)
    return folder


def rewrite_manifest(folder, change):
    data = json.loads((folder / "manifest.json").read_text())
    change(data)
    (folder / "manifest.json").write_text(json.dumps(data))


def write_png_bomb(path: Path, width: int, height: int) -> Path:
    """A valid grayscale PNG of width x height black pixels, compressed row by row: a few hundred KB
    on disk for hundreds of megapixels, made without holding the image in memory."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor, row, parts = zlib.compressobj(9), b"\0" * (width + 1), []
    for _ in range(height):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b""))
    return path


def bounded_python(code: str, limit_bytes: int, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `code` in a fresh Python whose address space is capped at `limit_bytes` (RLIMIT_AS), so a
    test of something that could blow up fails with a MemoryError instead of swapping the machine."""
    import resource

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=cap, env=env, timeout=600)


def write_cub(root: Path, per_class: int = 4, seed: int = 3) -> Path:
    """A CUB_200_2011/ tree in the layout it ships in (ids 1-based, boxes x y width height, JPEGs under
    images/<NNN.class>/), whose classes are the shapes dataset's: a shapes model can be scored on it.
    The first half of each class is marked for training, the rest for testing; one test image has a
    segmentation, as CUB's separate segmentations/ download has."""
    from runtime.evaluation.shapes import CLASSES, render_split

    data = render_split(per_class * len(CLASSES) * 3, seed, "test")
    rows = {name: [] for name in ("images", "image_class_labels", "train_test_split", "bounding_boxes")}
    counts = dict.fromkeys(range(len(CLASSES)), 0)
    image_id = 0
    for pixels, label, box, mask in zip(data.images, data.labels, data.boxes, data.masks, strict=True):
        if counts[int(label)] == per_class:
            continue
        counts[int(label)] += 1
        image_id += 1
        folder = f"{int(label) + 1:03d}.{CLASSES[int(label)]}"
        name = f"{folder}/{CLASSES[int(label)]}_{image_id:04d}.jpg"
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "images" / name, quality=95)
        x0, y0, x1, y1 = (float(v) for v in box)
        rows["images"].append(f"{image_id} {name}")
        rows["image_class_labels"].append(f"{image_id} {int(label) + 1}")
        training = counts[int(label)] <= per_class // 2
        rows["train_test_split"].append(f"{image_id} {1 if training else 0}")
        rows["bounding_boxes"].append(f"{image_id} {x0:.1f} {y0:.1f} {x1 - x0:.1f} {y1 - y0:.1f}")
        if not training and not (root / "segmentations").exists():  # the first test image
            (root / "segmentations" / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask.astype(np.uint8) * 255).save((root / "segmentations" / name).with_suffix(".png"))
    for name, lines in rows.items():
        (root / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (root / "classes.txt").write_text("".join(f"{i + 1} {i + 1:03d}.{c}\n" for i, c in enumerate(CLASSES)))
    return root


def write_image_folder(
    root: Path, per_class: int = 6, val: bool = False, test: int = 3, boxes: bool = True, seed: int = 5, size: int = 64
) -> Path:
    """An image-classification tree in torchvision's ImageFolder layout, whose classes are the shapes
    dataset's: DIR/train/<class>/*.jpg (per_class each), DIR/val/ when `val`, DIR/test/ (`test` each),
    and DIR/boxes.csv (path relative to DIR, x0,y0,x1,y1,label) for the val and test images (and,
    without val/, the training images, of which training carves its validation). Images are JPEGs
    of `size`x`size` pixels; every third is stored at 1.5x that size, so boxes must be rescaled."""
    from runtime.evaluation.shapes import CLASSES, render_split

    splits = {"train": per_class, **({"val": max(2, per_class // 3)} if val else {}), **({"test": test} if test else {})}
    rows = ["path,x0,y0,x1,y1,label"]
    for split_index, (split, count) in enumerate(splits.items()):
        data = render_split(count * len(CLASSES) * 3, seed + split_index, split, size)
        written = dict.fromkeys(range(len(CLASSES)), 0)
        for number, (pixels, label, box) in enumerate(zip(data.images, data.labels, data.boxes, strict=True)):
            label = int(label)
            if written[label] == count:
                continue
            written[label] += 1
            name = f"{split}/{CLASSES[label]}/{CLASSES[label]}_{number:04d}.jpg"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            image, scale = Image.fromarray(pixels), 1.5 if number % 3 == 0 else 1.0
            if scale != 1.0:
                image = image.resize((round(size * scale), round(size * scale)), Image.Resampling.BILINEAR)
            image.save(root / name, quality=95)
            if boxes and (split != "train" or not val):
                x0, y0, x1, y1 = (float(v) * scale for v in box)
                rows.append(f"{name},{x0:.1f},{y0:.1f},{x1:.1f},{y1:.1f},{CLASSES[label]}")
    if boxes:
        (root / "boxes.csv").write_text("\n".join(rows) + "\n")
    return root


def fresh_virtualenv(folder: Path, python: str, *requirements: str) -> Path:
    """A new virtualenv of interpreter `python` at `folder` with `requirements` pip-installed from
    the package index; returns its python. Fails the test with pip's last lines if pip fails."""
    import pytest

    made = subprocess.run([python, "-m", "venv", str(folder)], capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    venv_python = folder / "bin" / "python"
    install = subprocess.run(
        [str(venv_python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *requirements],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if install.returncode != 0 and any(
        marker in install.stderr for marker in ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable")
    ):
        pytest.skip(f"the package index cannot be reached: {install.stderr.strip().splitlines()[-1]}")
    assert install.returncode == 0, install.stderr[-2000:]
    return venv_python


def small_gapcam(num_classes: int = 3, cam_channels: int = 8, size: int = 32, seed: int = 0):
    """(a tiny untrained GapCam in eval mode, its ModelInfo): the smallest model export accepts, for tests
    of the exporter and the file format that need no training."""
    import torch

    from runtime.formats.onnx_model import ModelInfo
    from runtime.inputs.image import Preprocess
    from train.models import Architecture, GapCam

    torch.manual_seed(seed)
    model = GapCam(Architecture(num_classes=num_classes, cam_channels=cam_channels, backbone_args={"widths": (8,)})).eval()
    info = ModelInfo(
        labels=[chr(ord("a") + i) for i in range(num_classes)],
        preprocess=Preprocess(size, size),
        fc_weight=model.fc.weight.detach().numpy(),
        fc_bias=model.fc.bias.detach().numpy(),
    )
    return model, info


def multilabel_copy(model_path: Path, out: Path, thresholds: list[float] | None = None) -> Path:
    """A copy of a gapcam model that says it is multi-label (sigmoid activation, these per-class
    thresholds; None: the default), for tests of what the runtime does with such models."""
    import onnx

    model = onnx.load(model_path)
    props = {p.key: p.value for p in model.metadata_props}
    props["gapcam.activation"] = json.dumps("sigmoid")
    props["gapcam.thresholds"] = json.dumps(thresholds or [])
    del model.metadata_props[:]
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, out)
    return out


HEADLESS_CHROMIUM = (
    "--headless",
    "--no-sandbox",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_binary() -> str:
    """Chromium, which `make chromium` (a step of `make test`) installs where it can; else the test is skipped."""
    import pytest

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("Chromium is not installed: `make chromium` installs Debian's chromium (apt-get, as root)")
    return found


def headless_chromium(browser: str, profile: Path, *flags: str) -> list[str]:
    """The command line of headless Chromium with a profile of its own and none of its background
    traffic (updates, sync); `flags` follow, the URL among them."""
    return [browser, *HEADLESS_CHROMIUM, f"--user-data-dir={profile}", *flags]
