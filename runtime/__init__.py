"""gapcam runtime: run exported CAM models with onnxruntime, numpy and Pillow only (no torch)."""
from importlib import metadata as _metadata

from runtime.errors import CamError, GapcamError
from runtime.image import Preprocess, load_image, preprocess
from runtime.onnx_model import ModelInfo
from runtime.results import CamResult, explain_outputs
from runtime.session import CamSession

try:
    __version__ = _metadata.version("gapcam")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"

__all__ = [
    "CamError",
    "CamResult",
    "CamSession",
    "GapcamError",
    "ModelInfo",
    "Preprocess",
    "__version__",
    "explain_outputs",
    "load_image",
    "preprocess",
]
