"""gapcam export: checkpoints and torch models to self-describing ONNX files, with parity checked."""
from export.errors import ExportError
from export.onnx_export import ExportReport, export_checkpoint, export_model
from export.parity import TOLERANCE, measure_parity

__all__ = ["TOLERANCE", "ExportError", "ExportReport", "export_checkpoint", "export_model", "measure_parity"]
