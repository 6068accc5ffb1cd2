"""`python -m zoo triton`: a Triton Inference Server model repository from a package.

Triton serves the ONNX graph (logits, features and, where the model has them, every class's map
`cams`); the client turns those outputs into `CamResult`s with `runtime.explain_outputs`, using the
`ModelInfo` (fc weights, labels, box threshold) that the package's ONNX metadata carries.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from runtime.errors import raises_only
from runtime.formats.files import atomic_path, write_text_atomic
from runtime.formats.package import MODEL
from runtime.inference.providers import CPU
from runtime.inference.session import CamSession
from zoo.errors import ZooError

TRITON_TYPES = {"float32": "TYPE_FP32"}


def _tensor(entry: dict, labels: bool = False) -> str:
    dims = ", ".join(str(d) for d in entry["shape"][1:])  # Triton's dims leave out the batch axis
    extra = '\n    label_filename: "labels.txt"' if labels else ""
    return f'  {{\n    name: "{entry["name"]}"\n    data_type: {TRITON_TYPES[entry["dtype"]]}\n    dims: [ {dims} ]{extra}\n  }}'


def config_pbtxt(name: str, signature: dict, max_batch_size: int) -> str:
    outputs = ",\n".join(_tensor(o, labels=o["name"] == "logits") for o in signature["outputs"])
    return (
        f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch_size}\n'
        f"input [\n{_tensor(signature['input'])}\n]\noutput [\n{outputs}\n]\n"
        "dynamic_batching { }\n"
    )


@raises_only(ZooError)
def triton_repository(package: str | os.PathLike, out_dir: str | os.PathLike, max_batch_size: int = 64) -> Path:
    """Write OUT_DIR/NAME/{config.pbtxt, labels.txt, 1/model.onnx}; returns OUT_DIR/NAME."""
    session = CamSession(package, providers=[CPU])
    if session.package is None:
        raise ZooError(f"{package}: triton takes a package (folder, archive or name), not a bare .onnx file")
    signature = session.signature()
    if any(entry["dtype"] not in TRITON_TYPES for entry in [signature["input"], *signature["outputs"]]):
        raise ZooError(f"{package}: only float32 tensors are mapped to Triton types")
    name = session.package.manifest.name
    model_dir = Path(out_dir) / name
    if (model_dir / "1").exists():
        shutil.rmtree(model_dir / "1")
    with atomic_path(model_dir / "1" / "model.onnx") as tmp:
        tmp.write_bytes(session.package.read(MODEL))
    write_text_atomic(model_dir / "labels.txt", "\n".join(session.labels) + "\n")
    write_text_atomic(model_dir / "config.pbtxt", config_pbtxt(name, signature, max_batch_size))
    return model_dir
