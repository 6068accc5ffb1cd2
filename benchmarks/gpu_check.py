"""GPU checks in one run: CUDA training, the CUDA provider really in use, CUDA-vs-CPU parity, timings.

    python benchmarks/gpu_check.py OUT.md

Without a GPU it says so and measures the CPU side only, so it can be tried anywhere. Each step
prints as it goes; the Markdown summary is written at the end.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from export import export_checkpoint
from runtime import CamSession
from runtime.evaluation.shapes import render_split
from runtime.inference.providers import CPU, CUDA, cuda_driver_present
from runtime.maps.cam import class_activation_maps
from train.checkpoint import load_checkpoint
from train.loop import TrainConfig, fit, last_path


def median_ms(fn, repeats: int = 20) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main(out: Path) -> None:
    lines = ["# GPU check", ""]
    say = lambda text: (print(text, flush=True), lines.append(text))  # noqa: E731
    gpu = torch.cuda.is_available()
    say(f"- torch {torch.__version__}, CUDA available: {gpu}" + (f" ({torch.cuda.get_device_name(0)})" if gpu else ""))
    say(f"- NVIDIA driver library present: {cuda_driver_present()}")
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "shapes.pt"
        device = "cuda" if gpu else "cpu"
        fit(TrainConfig(recipe="shapes", out=str(checkpoint), samples=2000, epochs=2, device=device), log=lambda line: None)
        seconds = load_checkpoint(last_path(checkpoint)).training.history[-1]["seconds"]
        say(f"- `python -m train shapes --samples 2000 --device {device}`: {seconds:.2f} s for the second epoch")
        model = export_checkpoint(checkpoint).path
        cpu = CamSession(model, providers=[CPU])
        default = CamSession(model)
        say(f"- CamSession(providers=None) uses {default.providers}")
        images = list(render_split(64, 0, "test").images)
        batch = cpu.to_batch(images)
        classes = np.tile(np.arange(len(cpu.labels)), (len(batch), 1))
        reference = cpu.infer(batch)
        if CUDA in default.providers:
            logits, features = default.infer(batch)
            for name, ours, theirs in (("logits", logits, reference[0]), ("features", features, reference[1])):
                say(f"- CUDA vs CPU {name}: max relative difference {np.abs(ours - theirs).max() / np.abs(theirs).max():.2e}")
            cams, cams_cpu = (class_activation_maps(f, cpu.info.fc_weight, classes) for f in (features, reference[1]))
            say(f"- CUDA vs CPU CAMs: max relative difference {np.abs(cams - cams_cpu).max() / np.abs(cams_cpu).max():.2e}")
            maps_gpu, maps_cpu = default.infer(batch, ("cams",))[0], cpu.infer(batch, ("cams",))[0]
            say(
                "- CUDA vs CPU graph class maps (`cams`): max relative difference "
                f"{np.abs(maps_gpu - maps_cpu).max() / np.abs(maps_cpu).max():.2e}"
            )
            agree = (logits.argmax(1) == reference[0].argmax(1)).all()
            say(f"- argmax agrees on all {len(batch)} images: {bool(agree)}")
        else:
            say("- CUDA provider not in use: no GPU parity measured")
        lines += [
            "",
            "Bytes copied to the host per call: `features` (what CAMs needed before) against `cams` (the class maps "
            "the graph now computes, what `run` fetches for CAM and Grad-CAM).",
            "",
            "| provider | batch | infer logits + features | infer logits + cams | run (CAM + box) | features bytes | cams bytes |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for session in {tuple(s.providers): s for s in (cpu, default)}.values():
            for size in (1, 8, 64):
                features_ms = median_ms(lambda session=session, size=size: session.infer(batch[:size]))
                maps_ms = median_ms(lambda session=session, size=size: session.infer(batch[:size], ("logits", "cams")))
                run = median_ms(lambda session=session, size=size: session.run(images[:size]), repeats=5)
                _, features = session.infer(batch[:size])
                _, maps = session.infer(batch[:size], ("logits", "cams"))
                say(
                    f"| {session.providers[0]} | {size} | {features_ms:.2f} ms | {maps_ms:.2f} ms | {run:.2f} ms | "
                    f"{features.nbytes:,} | {maps.nbytes:,} |"
                )
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "gpu_check.md"))
