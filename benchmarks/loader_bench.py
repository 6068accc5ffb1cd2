"""The streaming training pipeline measured: peak memory and images per second of one training
epoch on generated 256x256 JPEGs, against the in-memory loader gapcam had before (commit 7ce38a2).

    .venv/bin/python benchmarks/loader_bench.py [--images 3000] [--old-tree DIR]

Writes an ImageFolder tree of `--images` JPEGs (the shapes dataset rendered at 256x256, 5 classes),
then, each in a fresh process:
- the loader alone: images per second of one augmented epoch (decode, resize to 224, random
  resized crop, flip, normalize, collate), with 0, 1 and 2 workers, streamed and cached;
- training one epoch of `python -m train folder` at 224x224 with a deliberately light network (a
  four-stage small_cnn of 8 to 64 channels, K = 64: about 0.1 GFLOP an image, so that the data
  pipeline, not the model, decides; batch 32; 10% carved for validation): the epoch's
  seconds (training plus the validation pass) and the peak memory of the whole process tree
  (proportional set size, so pages that workers share are counted once), streamed with 0, 1 and
  2 workers, cached with 1, and, with `--old-tree DIR` (a checkout of 7ce38a2), the in-memory
  loader, which decodes every image into one float32 tensor before the first step.
Prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the process-tree memory helper the tests use too
from process_tree import tree_memory_mb  # noqa: E402

SAMPLE_S = 0.1


def run_measured(code: str, cwd: Path) -> tuple[dict, float]:
    """(the JSON the code prints last, peak tree PSS in MB) of `python -c code`."""
    process = subprocess.Popen([sys.executable, "-c", code], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, tree_memory_mb(process.pid, "Pss"))
        time.sleep(SAMPLE_S)
    out, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"benchmark step failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1]), peak


def write_tree(root: Path, count: int) -> None:
    sys.path.insert(0, str(ROOT))
    from PIL import Image

    from runtime.evaluation.shapes import CLASSES, render_sample

    for i in range(count):
        pixels, label, _, _ = render_sample(0, "train", i, 256)
        folder = root / "train" / CLASSES[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)


LOADER_ONLY = """
import json, sys, tempfile, time
from pathlib import Path
from train.recipes import FOLDER, DataOptions
from train.data import loader, training_sampler
options = DataOptions(Path({data!r}))
recipe = FOLDER.resolve_labels(options)
with tempfile.TemporaryDirectory() as cache:
    data = recipe.load(options, {cache!r}, cache, {workers})
    sampler = training_sampler(data.train, 0, 0, 1)
    start, seen = time.perf_counter(), 0
    for batch in loader(data.train, 32, {workers}, sampler):
        seen += len(batch.y)
    print(json.dumps({{"images": seen, "seconds": time.perf_counter() - start}}))
"""

LIGHT = {"backbone": "small_cnn", "in_channels": 3, "cam_channels": 64, "backbone_args": {"widths": (8, 16, 32, 64), "convs_per_stage": 1}}

TRAIN_NEW = """
import json, time
from dataclasses import replace
from train.loop import TrainConfig, fit
from train.models import Architecture
from train.recipes import FOLDER, RECIPES
from train import load_checkpoint
RECIPES["folder"] = replace(FOLDER, architecture=Architecture(**{light!r}))
start = time.perf_counter()
fit(TrainConfig(recipe="folder", data={data!r}, out="bench.pt", epochs=1, batch_size=32, workers={workers}, cache={cache!r},
                pretrained=False), log=lambda line: None)
history = load_checkpoint("bench.last.pt").training.history
print(json.dumps({{"epoch_seconds": history[0]["seconds"], "total_seconds": time.perf_counter() - start}}))
"""

TRAIN_OLD = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, {old!r})
from runtime.inputs.image import Preprocess
from runtime.evaluation.shapes import CLASSES
from train import load_checkpoint
from train.loop import TrainConfig, fit
from train.models import Architecture
from train.readers import carve, class_folders
from train.recipes import RECIPES, Recipe
RECIPES["bench"] = Recipe(
    name="bench", labels=tuple(sorted(CLASSES)),
    preprocess=Preprocess(224, 224, "RGB", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    architecture=Architecture(num_classes=len(CLASSES), **{light!r}),
    read=lambda recipe, options, split: carve(class_folders(options.path / "train", recipe.labels), split, 0, "train"),
    batch_size=32, optimizer="sgd", lr=3e-3, weight_decay=1e-4,
)
start = time.perf_counter()
fit(TrainConfig(recipe="bench", data={data!r}, out="bench.pt", epochs=1), log=lambda line: None)
history = load_checkpoint("bench.last.pt").training["history"]
print(json.dumps({{"epoch_seconds": history[0]["seconds"], "total_seconds": time.perf_counter() - start}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--old-tree", type=Path, help="a checkout of gapcam 7ce38a2 (the in-memory loader)")
    parser.add_argument("--training-only", action="store_true", help="skip the loader-alone rows")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        data = Path(work) / "photos"
        write_tree(data, args.images)
        print(f"{args.images} JPEGs of 256x256 (5 classes), model input 224x224; {os.cpu_count()} CPU cores\n")
        print("| loader alone (one augmented epoch) | workers | images/s |\n|---|---|---|")
        for cache in () if args.training_only else ("off", "on"):
            for workers in (0, 1, 2):
                result, _ = run_measured(LOADER_ONLY.format(data=str(data), cache=cache, workers=workers), ROOT)
                label = "streamed from the JPEGs" if cache == "off" else "from the memory-mapped cache"
                print(f"| {label} | {workers} | {result['images'] / result['seconds']:.0f} |")
        print("\n| training one epoch (light small_cnn at 224, batch 32) | workers | epoch s | images/s | whole run s | peak memory MB |")
        print("|---|---|---|---|---|---|")
        runs = [
            (label, TRAIN_NEW, w, cache)
            for label, cache in (("streamed (`--cache off`)", "off"), ("cached (`--cache on`)", "on"))
            for w in (0, 1, 2)
        ]
        if args.old_tree:
            runs.append(("in memory (gapcam 7ce38a2)", TRAIN_OLD, 0, ""))
        for label, code, workers, cache in runs:
            with tempfile.TemporaryDirectory() as cwd:
                result, peak = run_measured(
                    code.format(data=str(data), workers=workers, cache=cache, old=str(args.old_tree), light=LIGHT),
                    Path(cwd) if code is TRAIN_NEW else Path(args.old_tree),
                )
            print(
                f"| {label} | {workers if code is TRAIN_NEW else '-'} | {result['epoch_seconds']:.1f} | "
                f"{args.images / result['epoch_seconds']:.0f} | "
                f"{result['total_seconds']:.1f} | {peak:.0f} |"
            )


if __name__ == "__main__":
    main()
