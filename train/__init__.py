"""gapcam training: GAP-CAM models, datasets, recipes, the training loop and checkpoints."""
from train.checkpoint import Checkpoint, load_checkpoint, load_model, save_checkpoint
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
    "Recipe",
    "TrainConfig",
    "TrainError",
    "fit",
    "load_checkpoint",
    "load_model",
    "resume",
    "save_checkpoint",
]
