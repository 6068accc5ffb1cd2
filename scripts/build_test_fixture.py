"""Rebuild the fast test tier's committed model, tests/data/tiny.onnx (`make test-fixture`).

    python scripts/build_test_fixture.py [OUT]     # default: tests/data/tiny.onnx

The shapes recipe (64x64 RGB, five classes) with a narrower backbone, so the file stays near 60 KB
instead of 0.5 MB, trained for one epoch on 160 images with seed 0 (as tests/conftest.py's
`tiny_checkpoint`) and exported by `export.onnx_export.export_checkpoint`, checks and parity
included. The tests that need only an ONNX model use it, so they run without torch. Rebuild it when
the ONNX contract changes: tests/test_fixture_model.py fails while it is of an older format.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from export.onnx_export import export_checkpoint  # noqa: E402
from train import recipes  # noqa: E402
from train.loop import TrainConfig, fit  # noqa: E402

WIDTHS = (8, 16, 16, 32)  # backbone stage widths (the recipe's: 16, 32, 64, 128); three pools keep 8x8 maps at 64x64
CAM_CHANNELS = 16  # K, the CAM conv's filters
SAMPLES, EPOCHS, SEED = 160, 1, 0  # as tiny_checkpoint: a barely trained model, enough for the runtime's tests


def build(out: Path) -> Path:
    """Train and export the fixture model to `out`, written atomically (a failed run keeps the old file)."""
    shapes = recipes.SHAPES.with_arch(backbone_args={"widths": WIDTHS, "convs_per_stage": 1})
    with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(recipes.RECIPES, {"shapes": shapes}):
        checkpoint = Path(tmp) / "tiny.pt"
        config = TrainConfig(
            "shapes", str(checkpoint), samples=SAMPLES, epochs=EPOCHS, seed=SEED, cam_channels=CAM_CHANNELS, device="cpu", workers=0
        )
        fit(config, log=lambda line: None)
        return export_checkpoint(checkpoint, out).path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=ROOT / "tests" / "data" / "tiny.onnx")
    out = parser.parse_args().out
    out.parent.mkdir(parents=True, exist_ok=True)
    path = build(out)
    print(f"wrote {path} ({path.stat().st_size / 1000:.0f} KB)")


if __name__ == "__main__":
    main()
