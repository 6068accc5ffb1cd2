"""`python -m zoo pack`: an exported ONNX file -> a versioned, checksummed package folder and .zip."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import runtime
from runtime.errors import raises_only
from runtime.formats.files import atomic_folder, atomic_path
from runtime.formats.package import MANIFEST, MODEL, NAME_PATTERN, VERSION_PATTERN, Manifest, Package, file_entry
from runtime.inference.providers import CPU, onnxruntime_version
from runtime.inference.session import CamSession
from runtime.inputs.image import load_image, resize
from zoo.card import render_card
from zoo.errors import ZooError
from zoo.vectors import VECTORS, make_vectors, replay_vectors

TASK = "image-classification-cam"
RANDOM_VECTORS = 4  # seeded random images added to the test vectors, whatever images are given
ZIP_TIME = (2020, 1, 1, 0, 0, 0)  # fixed entry time: the same package gives the same archive bytes


@dataclass
class PackResult:
    folder: Path
    archive: Path
    manifest: Manifest


def _random_images(session: CamSession) -> list[np.ndarray]:
    """A few seeded random uint8 images at model size: test inputs that need no data."""
    spec = session.preprocessing
    rng = np.random.default_rng(0)
    shape = (*spec.size, spec.channels) if spec.channels == 3 else spec.size
    return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(RANDOM_VECTORS)]


def _vector_images(session: CamSession, images: Sequence[str | os.PathLike]) -> list[np.ndarray]:
    """Model-size uint8 images: the given ones, then the seeded random ones."""
    spec = session.preprocessing
    return [np.asarray(resize(load_image(path), spec)) for path in images] + _random_images(session)


def _overlays(session: CamSession, images: Sequence[str | os.PathLike | np.ndarray]) -> dict[str, bytes]:
    """samples/NN.png: the CAM of the predicted class over each image, box and label drawn."""
    files = {}
    for i, path in enumerate(images):
        result = session.run(path)[0]
        picture = session.overlay(path, result.cams_scaled[0], box=result.box, label=f"{result.label} {result.prob:.2f}")
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG")
        files[f"samples/{i:02d}.png"] = buffer.getvalue()
    return files


def write_zip(folder: Path, archive: Path) -> None:
    """Zip a package folder (entries at the archive root, fixed times), atomically."""
    with atomic_path(archive) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as out:
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                info = zipfile.ZipInfo(path.relative_to(folder).as_posix(), date_time=ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                out.writestr(info, path.read_bytes())


@raises_only(ZooError)
def pack(
    model: str | os.PathLike,
    name: str,
    version: str,
    out_dir: str | os.PathLike = ".",
    *,
    license: str = "unspecified",
    description: str = "",
    images: Sequence[str | os.PathLike] = (),
    metrics: dict | None = None,
    overwrite: bool = False,
) -> PackResult:
    """Write OUT_DIR/NAME-VERSION/ and OUT_DIR/NAME-VERSION.zip from an exported gapcam ONNX file.

    Raises ZooError for a bad name or version, an existing package (without `overwrite`), a model
    that does not load, or test vectors that do not replay; nothing is written then.
    """
    if not NAME_PATTERN.match(name):
        raise ZooError(f"--name {name!r}: use lowercase letters, digits, '.', '_' and '-' (64 at most)")
    if not VERSION_PATTERN.match(version):
        raise ZooError(f"--version {version!r}: use X.Y.Z")
    session = CamSession(model, providers=[CPU])
    if session.package is not None:
        raise ZooError(f"{model}: already a package; pack takes an exported .onnx file")
    out_dir = Path(out_dir)
    folder, archive = out_dir / f"{name}-{version}", out_dir / f"{name}-{version}.zip"
    if not overwrite and (folder.exists() or archive.exists()):
        raise ZooError(f"{folder}: a package of that name and version exists (pass --overwrite to replace it)")

    info = session.info
    files: dict[str, bytes] = {
        MODEL: Path(session.path).read_bytes(),
        VECTORS: make_vectors(session, _vector_images(session, images)),
        # Without --images the samples show the random test inputs: honest, if not pretty.
        **_overlays(session, list(images) or _random_images(session)),
    }
    entries = {path: file_entry(data) for path, data in files.items()}
    provenance = info.provenance
    manifest = Manifest(
        name=name,
        version=version,
        task=TASK,
        labels=info.labels,
        input=session.signature()["input"],
        outputs=session.signature()["outputs"],
        preprocess=info.preprocess.to_dict(),
        files=entries,
        metrics={
            **{f"val_{k}" if not k.startswith("val_") else k: v for k, v in provenance.get("metrics", {}).items()},
            **{k: v for k, v in provenance.get("localization", {}).items() if not isinstance(v, dict)},
            **(metrics or {}),
        },
        parity=info.parity,
        license=license,
        provenance={
            "checkpoint_sha256": info.source_sha256,
            "recipe": provenance.get("recipe", ""),
            "data_fingerprint": provenance.get("data_fingerprint", ""),
            "epochs": provenance.get("epochs", ""),
            "seed": provenance.get("seed", ""),
            "exported_by_gapcam": info.gapcam_version,
            "packed_by_gapcam": runtime.__version__,
            "torch": provenance.get("exported_with", {}).get("torch", ""),
            "onnx": provenance.get("exported_with", {}).get("onnx", ""),
            "opset": provenance.get("exported_with", {}).get("opset", ""),
            "onnxruntime": onnxruntime_version(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        precision=info.precision,
        quantization=info.quantization,
        min_onnxruntime=info.min_onnxruntime,
    )
    files["README.md"] = render_card(manifest, description).encode()
    manifest.files["README.md"] = file_entry(files["README.md"])

    with atomic_folder(folder, {**files, MANIFEST: manifest.to_json().encode()}) as staging:
        replay = replay_vectors(CamSession(staging, providers=[CPU]), files[VECTORS])
        if not replay["passed"]:
            raise ZooError(f"{folder}: the new package's test vectors do not replay ({json.dumps(replay)})")
    write_zip(folder, archive)
    Package(archive)  # the archive must open and check like any fetched one
    return PackResult(folder, archive, manifest)
