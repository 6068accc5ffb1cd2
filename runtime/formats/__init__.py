"""Files on disk: the gapcam ONNX metadata, the package format, the local store, atomic writes."""
