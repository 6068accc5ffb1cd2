"""Each backbone on each application's fixture: seconds per training epoch and export parity.

    .venv/bin/python benchmarks/recipes_bench.py

Trains two epochs per (recipe, backbone) on the small fixtures the tests use (tests/fixtures.py),
with the recipe's CAM width (1024) and batch size 16, exports, and prints a Markdown table. The
epoch time is the second epoch's (training and validation), past first-call warm-up.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from export import export_checkpoint
from fixtures import write_chest_xray, write_fer_csv
from train.checkpoint import load_checkpoint
from train.loop import TrainConfig, fit, last_path
from train.models import BACKBONES


def main() -> None:
    torch.set_num_threads(torch.get_num_threads())
    print("| recipe | backbone | input | train images | s / epoch | parity logits | features | CAMs | argmax agrees |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = {"fer": write_fer_csv(tmp / "fer2013.csv"), "chest-xray": write_chest_xray(tmp / "xray", corrupt=False)}
        for recipe, path in data.items():
            for backbone in sorted(BACKBONES):
                out = tmp / f"{recipe}-{backbone}.pt"
                fit(
                    TrainConfig(recipe=recipe, out=str(out), data=str(path), epochs=2, batch_size=16, backbone=backbone),
                    log=lambda line: None,
                )
                last = load_checkpoint(last_path(out))
                spec = last.preprocess
                parity = export_checkpoint(out).parity
                print(
                    f"| {recipe} | {backbone} | {spec['height']}x{spec['width']}x{len(spec['mean'])} | "
                    f"{last.provenance.images['train']} | {last.training.history[-1]['seconds']:.2f} | "
                    f"{parity['logits']['relative']:.1e} | {parity['features']['relative']:.1e} | {parity['cams']['relative']:.1e} | "
                    f"{'yes' if parity['argmax_agree'] else 'NO'} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
