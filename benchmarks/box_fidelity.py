"""How far the bounded boxes of `CamSession.run` are from boxes computed the exact way.

    .venv/bin/python benchmarks/box_fidelity.py demo/shapes.onnx

`run` finds each box on a map no larger than the model input and scales it to the image; the exact
way builds the CAM at image size and boxes that. On the demo's held-out images (`shapes` test split,
seed 0, as `python -m runtime eval` scores them), resized up to larger sizes, this prints the IoU
between the two boxes per size: median, share >= 0.98, minimum.
"""

from __future__ import annotations

import sys

import numpy as np
from PIL import Image

from runtime import CamSession
from runtime.evaluation.datasets import shapes_ground_truth
from runtime.maps.boxes import box_iou, cam_box

SIZES = ((64, 64), (480, 640), (1200, 1500))


def main(model: str, count: int = 300) -> None:
    session = CamSession(model)
    truth = shapes_ground_truth(count, 0, session.input_size[0])
    print(f"model {model}, {count} held-out shapes images, box threshold {session.box_threshold:.2f}\n")
    print("| image size | median IoU | share >= 0.98 | minimum IoU |")
    print("| --- | --- | --- | --- |")
    for height, width in SIZES:
        ious = []
        for start in range(0, count, 32):
            pictures = [Image.fromarray(p).resize((width, height), Image.Resampling.BILINEAR) for p in truth.images[start : start + 32]]
            for result in session.run(pictures):
                ious.append(box_iou(result.box, cam_box(result.cam, session.box_threshold)))
        ious = np.array(ious)
        print(f"| {height}x{width} | {np.median(ious):.4f} | {np.mean(ious >= 0.98):.3f} | {ious.min():.3f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo/shapes.onnx")
