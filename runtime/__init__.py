"""gapcam runtime: run exported CAM models with onnxruntime, numpy and Pillow only (no torch).

By concern: `inference` (CamSession, providers, onnxruntime compatibility), `inputs` (images in),
`maps` (CAM math, the methods registry, boxes, results), `evaluation` (localization metrics and
dataset readers), `reports` (overlays, figures, HTML), `formats` (the ONNX metadata, packages, the
store, atomic files). `errors`, `cli` and `pipeline` serve them all.
"""

from importlib import metadata as _metadata

from runtime.deprecation import install_moved_module_finder
from runtime.errors import CamError, GapcamError
from runtime.formats.onnx_model import ModelInfo
from runtime.inference.session import CamSession
from runtime.inputs.image import Preprocess, load_image, preprocess
from runtime.maps.results import CamResult, explain_outputs

install_moved_module_finder()  # `import runtime.session` and the other 0.1 module names still work, with a warning

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
