"""gapcam export: checkpoints and torch models to self-describing ONNX files, with parity checked."""

from export.byo import export_torch_model, export_torchvision
from export.errors import ExportError
from export.onnx_export import ExportReport, export_checkpoint, export_model
from export.parity import TOLERANCE, measure_parity

__all__ = [
    "TOLERANCE",
    "ExportError",
    "ExportReport",
    "export_checkpoint",
    "export_model",
    "export_torch_model",
    "export_torchvision",
    "measure_parity",
]
