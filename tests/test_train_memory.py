"""Training memory does not grow with the data: validation and calibration run at the training batch
size, so a large validation split costs no more memory than a small one."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from fixtures import write_image_folder

ROOT = Path(__file__).resolve().parent.parent
# One epoch on 10 images, then validation on the 250 of val/, in a fresh process that reports its peak
# RSS. The model is the folder recipe's small_cnn (K 1024) at 96x96. Measured: with 10 or 250
# validation images the peak is 992 and 1008 MB (cache off; 1004 and 1000 cached); before validation
# ran at the training batch, at 128 images a pass, 250 validation images cost 548 MB more than 10.
TRAIN = """
import json, resource
from train.loop import TrainConfig, fit
fit(TrainConfig(recipe="folder", data={data!r}, out={out!r}, epochs=1, batch_size=8, width=96, height=96, backbone="small_cnn",
                pretrained=False, cache={cache!r}), log=lambda line: None)
print(json.dumps({{"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def training_peak_mb(tmp_path: Path, data: Path, cache: str) -> float:
    code = TRAIN.format(data=str(data), out=str(tmp_path / f"{cache}.pt"), cache=cache)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"]


def folder_with_large_validation(root: Path, train_per_class: int, val_per_class: int) -> Path:
    """DIR/train/<class>/ with a few images and DIR/val/<class>/ with many (shapes classes, 96 px JPEGs)."""
    write_image_folder(root / "val-source", per_class=val_per_class, test=0, boxes=False, size=96, seed=11)
    write_image_folder(root / "data", per_class=train_per_class, test=0, boxes=False, size=96)
    shutil.move(root / "val-source" / "train", root / "data" / "val")
    return root / "data"


def test_a_large_validation_split_costs_no_more_memory_than_a_small_one(tmp_path):
    small = folder_with_large_validation(tmp_path / "small", train_per_class=2, val_per_class=2)
    large = folder_with_large_validation(tmp_path / "large", train_per_class=2, val_per_class=50)
    growth = training_peak_mb(tmp_path, large, "off") - training_peak_mb(tmp_path, small, "off")
    # 240 more validation images: their pixels are 6.6 MB as uint8 and 26 MB as float32.
    assert growth < 150, f"peak RSS grew by {growth:.0f} MB with 240 more validation images"


def test_evaluation_gives_the_same_logits_at_any_batch_size(tiny_model, shape_images):
    from runtime.inputs.image import Preprocess
    from train.data import ImageSet
    from train.evaluate import logits_and_labels

    images = ImageSet(shape_images.images, shape_images.labels.astype("int64"), Preprocess(64, 64))
    one, labels_one, _ = logits_and_labels(tiny_model, images, torch.device("cpu"), 0, 1)
    all_at_once, labels_all, _ = logits_and_labels(tiny_model, images, torch.device("cpu"), 0, 8)
    torch.testing.assert_close(one, all_at_once, rtol=1e-5, atol=1e-5)
    assert torch.equal(labels_one, labels_all)
