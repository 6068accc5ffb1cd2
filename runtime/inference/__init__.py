"""Running a model: `CamSession`, onnxruntime providers, and which onnxruntime release runs which file."""
