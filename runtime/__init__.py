"""gapcam runtime: run exported CAM models with onnxruntime, numpy and Pillow only (no torch).

By concern: `inference` (CamSession, providers, onnxruntime compatibility), `inputs` (images in),
`maps` (CAM math, the methods registry, boxes, results), `evaluation` (localization metrics and
dataset readers), `reports` (overlays, figures, HTML), `formats` (the ONNX metadata, packages, the
store, atomic files). `errors`, `cli` and `pipeline` serve them all.
"""

from importlib import metadata as _metadata

from runtime.deprecation import MOVED_MODULES, install_moved_module_finder, warn_deprecated
from runtime.errors import CamError, GapcamError
from runtime.formats.onnx_model import ModelInfo
from runtime.inference.session import CamSession
from runtime.inputs.image import Preprocess, load_image, preprocess
from runtime.maps.results import CamResult, explain_outputs

install_moved_module_finder()


def __getattr__(name: str) -> object:
    """`runtime.session` and 0.1's other submodules as attributes of `runtime` (0.1 imported them all)."""
    old = f"runtime.{name}"
    if old in MOVED_MODULES:
        import importlib

        warn_deprecated(old, MOVED_MODULES[old])  # attributed to the caller's line
        return importlib.import_module(MOVED_MODULES[old])
    raise AttributeError(
        f"module 'runtime' has no attribute {name!r}"
    )  # `import runtime.session` and the other 0.1 module names still work, with a warning


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
