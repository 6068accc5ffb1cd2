"""`make bench`: CamSession throughput on this machine, printed as a Markdown table.

Times the stages a deployment pays for: preprocessing, one inference call at several batch sizes,
and the whole `run` (inference, CAMs upsampled to image size, boxes) for small and large images.
Each figure is the median of several repeats after a warm-up call.
"""
from __future__ import annotations

import statistics
import sys
import time

import numpy as np

from runtime import CamSession


def median_seconds(fn, repeats: int = 7) -> float:
    fn()  # warm-up: first calls allocate and plan
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(model: str) -> None:
    session = CamSession(model)
    height, width = session.input_size
    rng = np.random.default_rng(0)
    print(f"model {model}, input {height}x{width}, providers {session.providers}\n")
    print("| stage | batch | image size | median time | images/s |")
    print("| --- | --- | --- | --- | --- |")
    for batch in (1, 8, 64):
        x = rng.standard_normal((batch, session.preprocessing.channels, height, width)).astype(np.float32)
        seconds = median_seconds(lambda: session.infer(x))
        print(f"| infer | {batch} | {height}x{width} | {seconds * 1e3:.2f} ms | {batch / seconds:.0f} |")
    for size in ((height, width), (512, 512)):
        images = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(64)]
        seconds = median_seconds(lambda: session.to_batch(images), repeats=5)
        print(f"| preprocess | 64 | {size[0]}x{size[1]} | {seconds * 1e3:.2f} ms | {64 / seconds:.0f} |")
        for batch in (1, 64):
            seconds = median_seconds(lambda: session.run(images[:batch]), repeats=5)
            print(f"| run (top-1 CAM + box) | {batch} | {size[0]}x{size[1]} | {seconds * 1e3:.2f} ms | {batch / seconds:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "demo/shapes.onnx")
