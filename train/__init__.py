"""gapcam training: GAP-CAM models, datasets, recipes, the training loop and checkpoints."""

from train.checkpoint import Checkpoint, Provenance, SamplerState, TrainingState, load_checkpoint, load_model, load_trained, save_checkpoint
from train.errors import TrainError
from train.loop import TrainConfig, fit, resume
from train.models import BACKBONES, Architecture, GapCam
from train.recipes import RECIPES, Recipe

__all__ = [
    "BACKBONES",
    "RECIPES",
    "Architecture",
    "Checkpoint",
    "GapCam",
    "Provenance",
    "Recipe",
    "SamplerState",
    "TrainConfig",
    "TrainError",
    "TrainingState",
    "fit",
    "load_checkpoint",
    "load_model",  # deprecated: gapcam 0.1's (model, meta); use load_trained
    "load_trained",
    "resume",
    "save_checkpoint",
]
