"""What goes into a model: decoding images and preprocessing them exactly as the model was trained."""
