"""Faces first, for models whose inputs are face crops (FER): detect every face in an image, crop
each as the model was trained to see faces, classify them all in one inference call and map each
face's CAM back onto the whole image. Detection uses OpenCV (`pip install 'gapcam[faces]'`)."""

from runtime.faces.crops import DEFAULT_MARGIN, face_crop_box
from runtime.faces.detect import FaceDetector, HaarFaceDetector
from runtime.faces.session import Face, FaceSession

__all__ = ["DEFAULT_MARGIN", "Face", "FaceDetector", "FaceSession", "HaarFaceDetector", "face_crop_box"]
