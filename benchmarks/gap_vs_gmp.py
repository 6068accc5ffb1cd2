"""The CAM paper's GAP-versus-GMP comparison on the built-in shapes data, several seeds.

    .venv/bin/python benchmarks/gap_vs_gmp.py WORKDIR [SEED ...]

For each seed and pooling it runs, in WORKDIR (skipping steps whose output exists):
    python -m train shapes --pool POOL --seed SEED --out POOL-SEED.pt
    python -m export POOL-SEED.pt
    python -m runtime eval POOL-SEED.onnx shapes --count 1000 --out POOL-SEED-loc
then prints a Markdown table of mean +- standard deviation over seeds. Everything else (backbone,
CAM width, epochs, data size) is the recipe's default, the same for both poolings.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

POOLS = ("gap", "gmp")
COLUMNS = {
    "classification_accuracy": "classification acc.",
    "top1_localization_accuracy": "top-1 loc.",
    "gt_known_localization_accuracy": "GT-known loc.",
    "max_box_accuracy@0.5": "MaxBoxAcc@0.5",
    "mean_max_box_accuracy": "mean MaxBoxAcc",
    "pxap": "PxAP",
    "box_threshold": "calibrated threshold",
}


def step(workdir: Path, output: str, *command: str) -> None:
    if not (workdir / output).exists():
        subprocess.run([sys.executable, "-m", *command], cwd=workdir, check=True)


def figures(report: dict) -> dict:
    return {key: report["max_box_accuracy"]["0.5"]["value"] if key == "max_box_accuracy@0.5" else report[key] for key in COLUMNS}


def main(workdir: Path, seeds: list[int]) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    results = {pool: [] for pool in POOLS}
    for seed in seeds:
        for pool in POOLS:
            name = f"{pool}-{seed}"
            step(workdir, f"{name}.pt", "train", "shapes", "--pool", pool, "--seed", str(seed), "--out", f"{name}.pt")
            step(workdir, f"{name}.onnx", "export", f"{name}.pt")
            step(
                workdir,
                f"{name}-loc/localization.json",
                "runtime",
                "eval",
                f"{name}.onnx",
                "shapes",
                "--count",
                "1000",
                "--out",
                f"{name}-loc",
            )
            results[pool].append(figures(json.loads((workdir / f"{name}-loc" / "localization.json").read_text())))
    print(f"| pooling | seeds | {' | '.join(COLUMNS.values())} |")
    print("| --- | --- |" + " --- |" * len(COLUMNS))
    for pool, rows in results.items():
        cells = [f"{np.mean([r[k] for r in rows]):.3f} ± {np.std([r[k] for r in rows]):.3f}" for k in COLUMNS]
        print(f"| {pool.upper()} | {len(rows)} | {' | '.join(cells)} |")
    print("\nper seed:")
    for pool, rows in results.items():
        for seed, row in zip(seeds, rows, strict=True):
            print(f"  {pool} seed {seed}: " + ", ".join(f"{COLUMNS[k]} {v:.3f}" for k, v in row.items()))


if __name__ == "__main__":
    main(Path(sys.argv[1]), [int(s) for s in sys.argv[2:]] or [1, 2, 3])
