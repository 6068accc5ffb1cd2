"""Peak memory of `python -m train folder` against the number of images, for each loader setting.

    .venv/bin/python benchmarks/train_memory.py [--sizes 500,2500] [--small-sizes 2500,25000]

Two families of runs, each a fresh `python -m train folder --data DIR --epochs 1 --backbone
small_cnn` process, sampled every 0.2 s from /proc (the training process's smaps_rollup, and the
proportional set size of its whole tree, workers included):
- as a user runs it: 288x288 JPEGs in three class folders, model input 224, batch 16;
- many small images: 48x48 JPEGs, `--size 48`, batch 16 (so that 25,000 images train in minutes).
Each with `--cache auto` (the default; it caches these sets), `--cache off`, and 0 and 2 workers.

Columns: the training process's peak RSS (what `getrusage` reports), its peak anonymous memory
(heap: what grows if something holds per-image data), its peak file-backed resident pages (the
libraries and the memory-mapped cache, as far as the kernel keeps them), and the peak PSS of the
process tree (workers' shared pages counted once). Prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the process-tree memory helper the tests use too
from process_tree import tree_memory_mb  # noqa: E402

SAMPLE_S = 0.2
CLASSES = ("a", "b", "c")


def write_folder(root: Path, count: int, side: int, seed: int = 0) -> None:
    """`count` JPEGs of side x side in train/<class>/: smooth stripes whose period depends on the class."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side]
    for i in range(count):
        label = i % len(CLASSES)
        base = (np.sin((xx + yy * label) / (2 + side / 40 * (1 + label)) + rng.uniform(0, 6)) * 60 + 120).astype(np.uint8)
        pixels = np.stack([base, np.roll(base, side // 10, 0), np.roll(base, side // 5, 1)], axis=2)
        folder = root / "train" / CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)


def rollup_mb(pid: int) -> dict[str, float]:
    fields = {}
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            parts = line.split()
            if parts[0] in ("Rss:", "Anonymous:"):
                fields[parts[0].rstrip(":")] = int(parts[1]) / 1024
    except OSError:
        return {}
    if len(fields) == 2:
        fields["file_backed"] = fields["Rss"] - fields["Anonymous"]  # libraries, the memory-mapped cache (and shared memory)
    return fields


def run(data: Path, out: Path, size: int | None, cache: str, workers: int) -> dict[str, float]:
    command = [
        sys.executable,
        "-m",
        "train",
        "folder",
        "--data",
        str(data),
        "--epochs",
        "1",
        "--backbone",
        "small_cnn",
        "--batch-size",
        "16",
        "--cache",
        cache,
        "--workers",
        str(workers),
        "--no-pretrained",
        "--out",
        str(out),
    ]
    if size:
        command += ["--size", str(size)]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=out.parent, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak = {"Rss": 0.0, "Anonymous": 0.0, "file_backed": 0.0, "tree_pss": 0.0}
    while process.poll() is None:
        for key, value in rollup_mb(process.pid).items():
            peak[key] = max(peak[key], value)
        peak["tree_pss"] = max(peak["tree_pss"], tree_memory_mb(process.pid, "Pss"))
        time.sleep(SAMPLE_S)
    _, err = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"training failed:\n{err[-3000:]}")
    return {**peak, "seconds": time.perf_counter() - started}


def family(title: str, counts: list[int], side: int, size: int | None, work: Path) -> None:
    print(f"\n{title}\n")
    print("| images | cache | workers | peak RSS MB | peak anonymous MB | peak file-backed MB | peak tree PSS MB | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    results = {}
    for count in counts:
        data = work / f"{title[:5]}-{count}"
        write_folder(data, count, side)
        for cache in ("auto", "off"):
            for workers in (0, 2):
                with tempfile.TemporaryDirectory(dir=work) as cwd:
                    peak = run(data, Path(cwd) / "model.pt", size, cache, workers)
                results[(count, cache, workers)] = peak
                print(
                    f"| {count} | {cache} | {workers} | {peak['Rss']:.0f} | {peak['Anonymous']:.0f} | {peak['file_backed']:.0f} | "
                    f"{peak['tree_pss']:.0f} | {peak['seconds']:.0f} |",
                    flush=True,
                )
    first, last = counts[0], counts[-1]
    print(f"\nGrowth from {first} to {last} images (peak RSS, peak anonymous), MB:")
    for cache in ("auto", "off"):
        for workers in (0, 2):
            a, b = results[(first, cache, workers)], results[(last, cache, workers)]
            print(f"- cache {cache}, {workers} workers: {b['Rss'] - a['Rss']:+.0f}, {b['Anonymous'] - a['Anonymous']:+.0f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="500,2500", help="image counts of the 288x288 runs (input 224)")
    parser.add_argument("--small-sizes", default="2500,25000", help="image counts of the 48x48 runs (input 48)")
    args = parser.parse_args()
    print(f"`python benchmarks/train_memory.py --sizes {args.sizes} --small-sizes {args.small_sizes}`; {os.cpu_count()} CPU cores")
    with tempfile.TemporaryDirectory(prefix="gapcam-train-memory-") as work:
        if args.sizes:
            family("288x288 JPEGs, input 224 (small_cnn, K 1024, batch 16)", [int(c) for c in args.sizes.split(",")], 288, None, Path(work))
        if args.small_sizes:
            family("48x48 JPEGs, input 48 (small_cnn, K 1024, batch 16)", [int(c) for c in args.small_sizes.split(",")], 48, 48, Path(work))


if __name__ == "__main__":
    main()
