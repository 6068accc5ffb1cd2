"""gapcam's JavaScript module in headless Chromium against CamSession, in one run on one machine:
model load time and per-image latency (decode excluded, preprocessing to box included) for the bundled
shapes model (64x64) and ResNet-18-GAP at 224 (random weights), WebAssembly with one thread and with two;
and the size of the site `gapcam web` writes.

    nice -n 19 .venv/bin/python benchmarks/web_bench.py docs/benchmarks.md

Needs Chromium (`make chromium`) and torch (the ResNet's export). The onnxruntime-web tarball comes from
.venv/downloads (`make onnxruntime-web`) through a local registry, so the run needs no network.
"""

from __future__ import annotations

import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from faithfulness_bench import RESNET18, export_resnet18, random_model  # noqa: E402 (one ResNet-18-GAP for the benchmarks)

from export.int8 import cpu_name  # noqa: E402
from fixtures import chromium_binary  # noqa: E402
from gapcam.web import ORT_VERSION, model_bytes, site_size, write_site  # noqa: E402
from runtime import CamSession  # noqa: E402
from test_web import SHAPES, real_tarball, registry, run_harness  # noqa: E402 (the tests' harness runner, not a copy)

REPEAT = 20  # timed runs per model after one warm-up run
IMAGE_SIZE = (640, 480)  # a camera frame's size: preprocessing resizes it to the model's input
SECTION = ("<!-- web_bench: begin -->", "<!-- web_bench: end -->")


def python_figures(model: Path, image: Path) -> dict[str, float]:
    started = time.perf_counter()
    session = CamSession(model, providers=["CPUExecutionProvider"])
    load = time.perf_counter() - started
    picture = session.load_image(str(image))  # decoded once: the browser's figures exclude decoding too
    session.run(picture)
    times, preprocessing = [], []
    for _ in range(REPEAT):
        started = time.perf_counter()
        session.run(picture)
        times.append(time.perf_counter() - started)
        started = time.perf_counter()
        session.to_batch(picture)
        preprocessing.append(time.perf_counter() - started)
    return {"load_ms": 1000 * load, "run_ms": 1000 * statistics.median(times), "pre_ms": 1000 * statistics.median(preprocessing)}


def browser_figures(browser: str, site: Path, models: list[str], threads: int, profile: Path) -> list[dict[str, float]]:
    steps = [{"kind": "bench", "model": name, "image": "frame.png", "repeat": REPEAT} for name in models]
    answers = run_harness(browser, site, steps, profile, query=f"?threads={threads}", timeout=600)
    return [
        {
            "load_ms": a["load_ms"],
            "run_ms": statistics.median(a["run_ms"]),
            "pre_ms": statistics.median(a["preprocess_ms"]),
            "isolated": a["isolated"],
        }
        for a in answers
    ]


Row = tuple[str, str, float, float, float]  # model, runtime, load, per image, of which preprocessing (ms)


def measure(folder: Path) -> tuple[list[Row], dict[str, int]]:
    browser = chromium_binary()
    resnet = export_resnet18(random_model(RESNET18), folder).path  # faithfulness_bench's ResNet-18-GAP at 224, seed 0
    models = {"shapes (64x64, bundled)": SHAPES, "ResNet-18-GAP 224 (random weights)": resnet}
    with registry(folder, real_tarball()):
        sites = {"wasm": write_site(SHAPES, folder / "site"), "wasm + webgpu": write_site(SHAPES, folder / "site-webgpu", webgpu=True)}
    sizes = {name: site_size(site) for name, site in sites.items()}
    sizes.update(module=site_size(sites["wasm"] / "gapcam"), model=(sites["wasm"] / "model.onnx").stat().st_size)
    site = sites["wasm"]
    names = []
    for i, model in enumerate(models.values()):
        names.append(f"model{i}.onnx")
        (site / names[-1]).write_bytes(model_bytes(model)[0])
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (IMAGE_SIZE[1], IMAGE_SIZE[0], 3), dtype=np.uint8)).save(site / "frame.png")
    rows = []
    python = [python_figures(site / name, site / "frame.png") for name in names]
    browsers = {threads: browser_figures(browser, site, names, threads, folder / f"profile{threads}") for threads in (1, 2)}
    for i, label in enumerate(models):
        rows.append((label, "CamSession (onnxruntime CPU, Python)", python[i]["load_ms"], python[i]["run_ms"], python[i]["pre_ms"]))
        for threads, figures in browsers.items():
            assert figures[i]["isolated"], "the harness page is not cross-origin isolated: no threads"
            runtime = f"browser, WebAssembly, {threads} thread{'s' if threads > 1 else ''}"
            rows.append((label, runtime, figures[i]["load_ms"], figures[i]["run_ms"], figures[i]["pre_ms"]))
    return rows, sizes


def section(rows: list[Row], sizes: dict[str, int]) -> str:
    lines = [
        SECTION[0],
        f"## In the browser: gapcam's JavaScript module against CamSession (`benchmarks/web_bench.py`, {date.today().isoformat()})",
        "",
        f"Headless Chromium ({platform.system()}, {cpu_name()}, 2 cores shared with other work, run under `nice -n 19`), onnxruntime-web "
        f"{ORT_VERSION}, and CamSession in the same run. Load: opening the model (reading and checking its metadata, creating the "
        f"inference session; the browser's first load also compiles onnxruntime's WebAssembly). Per image: the median of {REPEAT} "
        f"runs on an already decoded {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} frame: resize, normalize, inference, CAM, scaling and box "
        "(top-1). ResNet-18-GAP has random weights: its speed is that of a trained one.",
        "",
        "| model | runtime | load (ms) | per image (ms) | of which preprocessing (ms) |",
        "| --- | --- | ---: | ---: | ---: |",
        *(f"| {model} | {runtime} | {load:.0f} | {run:.1f} | {pre:.1f} |" for model, runtime, load, run, pre in rows),
        "",
        "Site size (`gapcam web shapes`): "
        + "; ".join(f"{name}: {sizes[name] / 1e6:.1f} MB" for name in ("wasm", "wasm + webgpu"))
        + f" (of which the module, web/src, is {sizes['module'] / 1e3:.0f} kB and the shapes model {sizes['model'] / 1e6:.1f} MB;"
        " the rest is onnxruntime-web's WebAssembly).",
        SECTION[1],
    ]
    return "\n".join(lines)


def write(path: Path, text: str) -> None:
    """Replace this benchmark's section of `path`, or append it."""
    old = path.read_text(encoding="utf-8")
    if SECTION[0] in old:
        start, end = old.index(SECTION[0]), old.index(SECTION[1]) + len(SECTION[1])
        new = old[:start] + text + old[end:]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(new, encoding="utf-8")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows, sizes = measure(Path(tmp))
    text = section(rows, sizes)
    print(text)
    if len(sys.argv) > 1:
        write(Path(sys.argv[1]), text)


if __name__ == "__main__":
    main()
