"""gapcam: Class Activation Map classifiers from PyTorch training to ONNX deployment.

The work lives in four packages: `train` (torch), `export` (torch, onnx), `runtime` (onnxruntime,
numpy and Pillow only) and `zoo`. This one holds what spans them: the `gapcam` command and the
Triton server behind `gapcam serve`.
"""

# Looked up here, not imported from runtime: `import gapcam` (and `gapcam --version`) must work where onnxruntime
# is broken, and `import runtime` refuses such an install (tests/test_packaging.py).
from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("gapcam")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
