"""gapcam: Class Activation Map classifiers from PyTorch training to ONNX deployment.

The work lives in four packages: `train` (torch), `export` (torch, onnx), `runtime` (onnxruntime,
numpy and Pillow only) and `zoo`. This one holds what spans them: the `gapcam` command and the
Triton server behind `gapcam serve`.
"""
from runtime import __version__  # the one lookup of the installed version

__all__ = ["__version__"]
