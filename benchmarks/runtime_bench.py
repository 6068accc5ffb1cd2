"""`make bench`: gapcam's CamSession against what users would otherwise run, in one process.

    .venv/bin/python benchmarks/runtime_bench.py [docs/benchmarks.md]

Two models with random weights: the FER recipe's architecture (small_cnn, K=1024, 48x48 gray, 7
classes) and a chest-X-ray-like resnet18-GAP (K=1024, 200 high x 256 wide, gray, 2 classes). For
each, at the model's input size, 480x640 and 1200x1500, batch 1 and 8, three paths from the same
uint8 images to the top class's CAM at image size:
- gapcam: `CamSession.run` (onnxruntime on the CPU; labels, probabilities, boxes, raw maps) plus
  reading each result's full-size CAM (`result.cam`);
- torch + torchcam `CAM`: preprocessing, forward, the top class's CAM, `F.interpolate` to the image
  size (bilinear), min-max scaling; no box;
- torch + pytorch-grad-cam `GradCAM` for the top class, resized the same way.
Then: the share of `run` that comes after onnxruntime returns; cold start as whole processes
(import, load, first result: wall time and peak RSS) of gapcam, the torch path and the floor (a
script that only imports numpy, Pillow and onnxruntime and runs the model once); and the peak
memory of one `run` on a 60-megapixel grayscale PNG against decoding it. The Markdown goes to
stdout and replaces the `make bench` section of the given file.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from export import export_model
from export.int8 import NO_GATE, NO_SPEED_GATE, CalibrationData, Int8Options, cpu_name, quantize_model
from runtime import CamSession, ModelInfo, explain_outputs
from runtime.evaluation.shapes import render_split
from runtime.inference.providers import CPU, installed_versions
from runtime.inputs.image import Preprocess, preprocess
from train.models import GapCam
from train.recipes import CHEST_XRAY, FER

THREADS = 2
SIZES = ((None, "model input"), ((480, 640), "480x640"), ((1200, 1500), "1200x1500"))
BATCHES = (1, 8)
MEGAPIXELS_60 = (7000, 8600)  # height, width: 60.2 megapixels
BEGIN, END = "<!-- make bench: begin -->", "<!-- make bench: end -->"


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: first calls allocate and plan
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class Logits(torch.nn.Module):
    """GapCam's logits alone, the output the torch CAM libraries expect."""

    def __init__(self, model: GapCam):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[0]


def build(recipe, folder: Path) -> tuple[GapCam, Path, Path]:
    """A random-weight GapCam of the recipe's architecture, exported; (model, onnx path, state dict path)."""
    torch.manual_seed(0)
    model = GapCam(recipe.architecture).eval()
    info = ModelInfo(
        labels=list(recipe.labels),
        preprocess=recipe.preprocess,
        fc_weight=model.fc.weight.detach().numpy(),
        fc_bias=model.fc.bias.detach().numpy(),
        architecture=recipe.architecture.to_dict(),
    )
    onnx_path = export_model(model, info, folder / f"{recipe.name}.onnx").path
    weights = folder / f"{recipe.name}.weights.pt"
    torch.save(model.state_dict(), weights)
    return model, onnx_path, weights


def torch_cam_path(model: GapCam, spec: Preprocess):
    """torch + torchcam: what a user of the torch tools runs for the top class's full-size CAM."""
    from torchcam.methods import CAM

    extractor = CAM(model, target_layer="cam_conv", fc_layer="fc")

    def run(images):
        x = torch.from_numpy(preprocess(images, spec))
        with torch.no_grad():
            logits, _ = model(x)
        top = logits.argmax(1).tolist()
        maps = extractor(top, logits, normalized=False)[0]
        out = []
        for image, cam in zip(images, maps, strict=True):
            up = F.interpolate(cam[None, None], size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0]
            out.append((up - up.min()) / (up.max() - up.min()).clamp(min=1e-12))
        return out

    return run


def gradcam_path(model: GapCam, spec: Preprocess):
    """torch + pytorch-grad-cam's GradCAM for the top class, resized to the image."""
    from pytorch_grad_cam import GradCAM

    extractor = GradCAM(model=Logits(model), target_layers=[model.cam_conv])

    def run(images):
        x = torch.from_numpy(preprocess(images, spec))
        maps = torch.from_numpy(extractor(input_tensor=x, targets=None))  # [N, H_in, W_in], scaled to [0, 1]
        return [
            F.interpolate(cam[None, None], size=image.shape[:2], mode="bilinear", align_corners=False)[0, 0]
            for image, cam in zip(images, maps, strict=True)
        ]

    return run


def gapcam_path(session: CamSession):
    def run(images):
        return [result.cam for result in session.run(images)]  # the full-size CAM, as the torch paths give

    return run


def block_medians(fns: dict, repeats: int, rounds: int = 2) -> dict[str, float]:
    """Median seconds of each function, timed in blocks (a warm-up, then `repeats` calls) taken in
    turns over `rounds` rounds: each path runs in steady state, as a user runs it, while the
    rounds spread this machine's drifting load (tens of percent within a minute) over all paths.
    Interleaving single calls instead would measure each library's thread pool waking up after
    the other's (torch's OpenMP and numpy's OpenBLAS threads spin, then sleep)."""
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()  # warm-up: first calls allocate, plan and wake threads
            for _ in range(repeats):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def after_inference_seconds(session: CamSession, images: list[np.ndarray], repeats: int) -> float:
    """Median time of the work `run` does once onnxruntime has returned, on the same outputs."""
    names = ("logits", "cams") if session.has_class_maps else ("logits", "features")
    logits, maps = session.infer(session.to_batch(images), names)
    given = {"class_maps": maps} if session.has_class_maps else {"features": maps}
    sizes = [image.shape[:2] for image in images]
    return median_seconds(lambda: explain_outputs(session.info, logits, sizes, **given), repeats)


def speed_rows(recipe, model: GapCam, onnx_path: Path, repeats: int) -> list[str]:
    session = CamSession(onnx_path, providers=["CPUExecutionProvider"])
    spec = recipe.preprocess
    paths = {"gapcam": gapcam_path(session), "torchcam": torch_cam_path(model, spec), "gradcam": gradcam_path(model, spec)}
    rng = np.random.default_rng(0)
    rows = []
    for size, name in SIZES:
        shape = size or spec.size
        images_all = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(max(BATCHES))]
        for batch in BATCHES:
            images = images_all[:batch]
            t = block_medians(
                {key: (lambda fn=fn, images=images: fn(images)) for key, fn in {**paths, "run": session.run}.items()}, repeats
            )
            run_alone = t["run"]
            after = after_inference_seconds(session, images, repeats)
            x = session.to_batch(images)
            with torch.no_grad():
                forward = block_medians(
                    {"onnxruntime": lambda x=x: session.infer(x, ("logits", "cams")), "torch": lambda x=x: model(torch.from_numpy(x))},
                    repeats,
                )
            rows.append(
                f"| {recipe.name} | {name} ({shape[0]}x{shape[1]}) | {batch} | {t['gapcam'] * 1e3:.1f} | {t['torchcam'] * 1e3:.1f} | "
                f"{t['gradcam'] * 1e3:.1f} | **{t['gapcam'] / t['torchcam']:.2f}** | {t['gapcam'] / t['gradcam']:.2f} | "
                f"{run_alone * 1e3:.1f} | {after / run_alone:.1%} | {forward['onnxruntime'] / forward['torch']:.2f} |"
            )
            print(rows[-1], flush=True)
    return rows


def child(code: str) -> tuple[float, float, str]:
    """Run `code` in a fresh Python; (wall seconds, peak RSS MB it reported, its last output line).

    glibc's allocator gets a fixed mmap threshold, so that large arrays are returned to the system
    when freed and the resident memory follows what is really in use.
    """
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True, env=env)
    wall = time.perf_counter() - start
    last = done.stdout.strip().splitlines()[-1]
    return wall, float(last.split()[0]), last


# VmHWM, not ru_maxrss: Linux carries the forking parent's peak into a child's ru_maxrss.
PEAK = 'print(next(int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:")), {extra})'


def cold_start_rows(recipe, onnx_path: Path, weights: Path, image: Path) -> list[str]:
    floor = f"""
        import numpy as np, onnxruntime as ort
        from PIL import Image
        session = ort.InferenceSession({str(onnx_path)!r}, providers=["CPUExecutionProvider"])
        size = ({recipe.preprocess.width}, {recipe.preprocess.height})
        x = np.asarray(Image.open({str(image)!r}).convert("L").resize(size), np.float32)[None, None] / 255
        session.run(None, {{"input": x}})
        {PEAK.format(extra='""')}
    """
    gapcam = f"""
        from runtime import CamSession
        result = CamSession({str(onnx_path)!r}).run({str(image)!r})[0]
        result.cam
        {PEAK.format(extra="result.label")}
    """
    # What a torch user runs: their own model class (here resnet18-GAP with the checkpoint's key
    # layout), torchvision-style preprocessing, torchcam; nothing of gapcam.
    spec = recipe.preprocess
    torch_path = f"""
        import torch, torchvision, torch.nn.functional as F
        from torch import nn
        from PIL import Image
        from torchcam.methods import CAM
        torch.set_num_threads({THREADS})
        class GapCam(nn.Module):
            def __init__(self):
                super().__init__()
                net = torchvision.models.resnet18()
                net.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
                self.backbone = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
                self.cam_conv = nn.Sequential(nn.Conv2d(512, 1024, 3, padding=1), nn.ReLU())
                self.fc = nn.Linear(1024, 2)
            def forward(self, x):
                return self.fc(self.cam_conv(self.backbone(x)).mean(dim=(2, 3)))
        model = GapCam().eval()
        model.load_state_dict(torch.load({str(weights)!r}, weights_only=True))
        extractor = CAM(model, target_layer="cam_conv", fc_layer="fc")
        picture = Image.open({str(image)!r}).convert("L")
        x = torchvision.transforms.functional.pil_to_tensor(picture.resize(({spec.width}, {spec.height}), Image.BILINEAR))
        x = ((x.float() / 255 - {spec.mean[0]}) / {spec.std[0]})[None]
        with torch.no_grad():
            logits = model(x)
        cam = extractor(int(logits.argmax()), logits, normalized=False)[0]
        up = F.interpolate(cam[None], size=picture.size[::-1], mode="bilinear", align_corners=False)
        up = (up - up.min()) / (up.max() - up.min())
        {PEAK.format(extra='""')}
    """
    runs = {
        name: [child(code) for _ in range(3)] for name, code in (("floor", floor), ("gapcam", gapcam), ("torch + torchcam", torch_path))
    }
    figures = {name: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs)) for name, rs in runs.items()}
    rows = [f"| {name} | {wall:.2f} s | {rss:.0f} MB |" for name, (wall, rss) in figures.items()]
    g, fl, tp = figures["gapcam"], figures["floor"], figures["torch + torchcam"]
    rows.append(f"| **gapcam / floor** | **{g[0] / fl[0]:.2f}x** | **{g[1] / fl[1]:.2f}x** |")
    rows.append(f"| **gapcam / torch path** | **{g[0] / tp[0]:.2f}x** | **{g[1] / tp[1]:.2f}x** |")
    return rows


def memory_rows(onnx_path: Path, image: Path) -> list[str]:
    # The peak is reset after the model is loaded and has run once (Linux's clear_refs 5), so that
    # the figure is what the case itself adds on top of the resident memory it starts from.
    setup = f"""
        from runtime import CamSession
        from runtime.inputs.image import load_image
        def status(key):
            return next(int(line.split()[1]) / 1024 for line in open("/proc/self/status") if line.startswith(key))
        session = CamSession({str(onnx_path)!r})
        session.run(load_image({str(onnx_path.parent / "small.png")!r}))
        open("/proc/self/clear_refs", "w").write("5")
        base = status("VmRSS:")
    """
    cases = {
        "decoding it (Pillow: `Image.open(path).load()`)": "from PIL import Image; picture = Image.open({image!r}); picture.load()",
        "`session.run(path)` (label, probabilities, box, raw map)": "result = session.run({image!r})[0]; result.box",
        "`session.run(path)` and reading `result.cam` (float32, 4 bytes a pixel)": "result = session.run({image!r})[0]; result.cam",
    }
    figures = {}
    for name, line in cases.items():
        code = setup + "\n        " + line.format(image=str(image)) + '\n        print(status("VmHWM:") - base)'
        figures[name] = child(code)[1]
    decode = next(iter(figures.values()))
    return [f"| {name} | {mb:.0f} MB | {mb / decode:.2f}x |" for name, mb in figures.items()]


def folder_rows(onnx_path: Path, folder: Path, count: int = 128) -> list[str]:
    """`python -m runtime MODEL FOLDER` on `count` 480x640 JPEGs against what its stages manage alone."""
    import contextlib
    import io

    from runtime.__main__ import main as runtime_cli

    rng = np.random.default_rng(2)
    images = folder / "photos"
    images.mkdir()
    ramp = np.linspace(0, 200, 640, dtype=np.float32)[None, :] + np.linspace(0, 55, 480, dtype=np.float32)[:, None]
    for i in range(count):
        pixels = np.clip(ramp + rng.normal(0, 12, ramp.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(images / f"{i:04d}.jpg", quality=90)
    session = CamSession(onnx_path)
    paths = sorted(images.iterdir())
    x = session.to_batch(paths[:32])
    model = 32 / median_seconds(lambda: session.infer(x, ("logits", "cams")), 3)
    decode = 32 / median_seconds(lambda: session.to_batch(paths[:32]), 3)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        runtime_cli(["predict", str(onnx_path), str(images), "--out", str(folder / "run"), "--batch-size", "32"], standalone_mode=False)
    run = count / (time.perf_counter() - start)
    return [
        f"| the model alone (`infer`, batch 32) | {model:.0f} |",
        f"| decoding and preprocessing alone (one thread) | {decode:.0f} |",
        f"| **folder run** (`python -m runtime MODEL FOLDER --batch-size 32`: overlays, results, report) | **{run:.0f}** |",
    ]


def folder_memory_rows(onnx_path: Path, folder: Path, counts: tuple[int, ...] = (1000, 10000)) -> list[str]:
    """Peak memory of whole `python -m runtime MODEL FOLDER` processes on folders of growing size:
    flat when decoding ahead, writing behind and the report are bounded."""
    rng = np.random.default_rng(3)
    rows = []
    for count in counts:
        images = folder / f"faces{count}"
        images.mkdir()
        tiles = [Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)) for _ in range(16)]
        for i in range(count):
            tiles[i % 16].save(images / f"{i:05d}.png")
        code = f"""
            import contextlib, io, sys, time
            from runtime.__main__ import main
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                main(["predict", {str(onnx_path)!r}, {str(images)!r}, "--out", {str(folder / f"run{count}")!r}], standalone_mode=False)
            {PEAK.format(extra=f"{count} / (time.perf_counter() - start)")}
        """
        _, peak, last = child(code)
        rows.append(f"| {count:,} | {peak:.0f} MB | {float(last.split()[1]):.0f} |")
    return rows


def int8_rows(recipe, onnx_path: Path, folder: Path, repeats: int) -> list[str]:
    """fp32 against its INT8 model (`export.int8` defaults, calibrated on 100 shapes images): `run`
    latency at batch 1 and 8, throughput at batch 32, file size."""
    images = list(render_split(132, 0, "train", max(recipe.preprocess.size)).images)
    data = CalibrationData(images[:100], images[100:], "shapes images")
    report = quantize_model(onnx_path, Int8Options(data, gate=NO_GATE, speed_gate=NO_SPEED_GATE, out=folder / f"{recipe.name}.int8.onnx"))
    sessions = {"fp32": CamSession(onnx_path, providers=[CPU]), "int8": CamSession(report.path, providers=[CPU])}
    held = images[100:]
    medians = block_medians({(p, b): (lambda b=b, s=s: s.run(held[:b])) for p, s in sessions.items() for b in (1, 8, 32)}, repeats)
    figures = {p: {b: medians[(p, b)] for b in (1, 8, 32)} for p in sessions}
    rows = []
    for precision, seconds in figures.items():
        size = onnx_path.stat().st_size if precision == "fp32" else report.size_bytes
        rows.append(
            f"| {recipe.name} | {precision} | {seconds[1] * 1e3:.1f} ms | {seconds[8] * 1e3:.1f} ms | "
            f"{32 / seconds[32]:.0f} | {size / 1e6:.2f} MB |"
        )
    speed = {b: figures["fp32"][b] / figures["int8"][b] for b in (1, 8, 32)}
    fidelity = report.quantization["fidelity"]
    rows.append(
        f"| {recipe.name} | int8 speed-up | {speed[1]:.2f}x | {speed[8]:.2f}x | {speed[32]:.2f}x | "
        f"{onnx_path.stat().st_size / report.size_bytes:.1f}x smaller (top-1 agreement {fidelity['top1_agreement']:.3f}) |"
    )
    return rows


def versions() -> str:
    return ", ".join(installed_versions(("numpy", "Pillow", "onnxruntime-gpu", "onnxruntime", "torch", "torchcam", "grad-cam")))


def main(target: Path | None) -> None:
    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    lines = [
        BEGIN,
        f"## CamSession against the torch CAM tools (`make bench`, {date.today().isoformat()})",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} cores; Python {platform.python_version()}; {versions()}; "
        f"onnxruntime on its CPU provider, torch with {THREADS} threads. Command: "
        "`make bench` (`.venv/bin/python benchmarks/runtime_bench.py docs/benchmarks.md`). Random weights; "
        "random uint8 images; medians of repeats after a warm-up call.",
        "",
        "Milliseconds per call, from uint8 images to the top class's CAM at image size. gapcam's column is "
        "`run` plus reading `result.cam`; the ratio in bold is the target (<= 0.6). `run` alone and the "
        "share of it after onnxruntime returns (labels, probabilities, boxes, raw maps; target <= 5%) follow, "
        "then the network alone: onnxruntime's inference call against torch's forward on the same batch.",
        "",
        "| model | image | batch | gapcam | torch + torchcam | torch + GradCAM | gapcam / torchcam | gapcam / GradCAM "
        "| `run` alone | after onnxruntime | forward: onnxruntime / torch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = {recipe.name: (recipe, *build(recipe, folder)) for recipe in (FER, CHEST_XRAY)}
        for recipe, model, onnx_path, _ in models.values():
            lines += speed_rows(recipe, model, onnx_path, repeats=5 if recipe is FER else 3)
        recipe, _, onnx_path, weights = models[CHEST_XRAY.name]
        rng = np.random.default_rng(1)
        photo = folder / "xray.png"
        Image.fromarray(rng.integers(0, 256, (1200, 1500), dtype=np.uint8)).save(photo)
        Image.fromarray(rng.integers(0, 256, (200, 256), dtype=np.uint8)).save(folder / "small.png")
        lines += [
            "",
            f"Cold start of one process (import, load the {recipe.name} model, first result on a 1200x1500 PNG), "
            "medians of 3 processes. Targets: gapcam <= 1.3x the floor, <= 0.1x the torch path's wall time, <= 0.2x its memory.",
            "",
            "| process | wall time | peak RSS |",
            "| --- | --- | --- |",
        ]
        lines += cold_start_rows(recipe, onnx_path, weights, photo)
        big = folder / "scan.png"
        Image.fromarray(np.tile(rng.integers(0, 256, (1000, MEGAPIXELS_60[1]), dtype=np.uint8), (7, 1))).save(big, compress_level=1)
        lines += [
            "",
            f"Peak memory of one `run` ({recipe.name} model, top-1) on a {MEGAPIXELS_60[0]}x{MEGAPIXELS_60[1]} grayscale PNG "
            "(60.2 megapixels), above the process's peak after loading the model; target: `run` <= 2.5x decoding.",
            "",
            "| what | peak memory added | against decoding |",
            "| --- | --- | --- |",
        ]
        lines += memory_rows(onnx_path, big)
        lines += [
            "",
            f"Folder runs: images per second on 128 JPEGs of 480x640 with the {recipe.name} model, "
            "against the model's own throughput and the decoding's.",
            "",
            "| what | images/s |",
            "| --- | --- |",
        ]
        lines += folder_rows(onnx_path, folder)
        lines += [
            "",
            "Peak memory of whole folder-run processes (the fer model, 64x64 grayscale PNGs): it should not grow with the folder.",
            "",
            "| images | peak RSS | images/s |",
            "| --- | --- | --- |",
        ]
        lines += folder_memory_rows(models[FER.name][2], folder)
        lines += [
            "",
            "INT8 models (`export --int8` defaults, calibrated on 100 shapes images at model size; random weights, so the "
            "agreement shown is only a sanity check: docs/int8.md measures fidelity on a trained model). `CamSession.run` "
            "on model-size images: latency at batch 1 and 8, throughput at batch 32.",
            "",
            "| model | precision | batch 1 | batch 8 | images/s at batch 32 | file |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for recipe, _, onnx_path, _ in models.values():
            lines += int8_rows(recipe, onnx_path, folder, repeats=5 if recipe is FER else 3)
    lines += ["", f"The whole benchmark took {time.perf_counter() - started:.0f} s.", END]
    text = "\n".join(lines)
    print(text)
    if target is not None:
        current = target.read_text() if target.exists() else ""
        if BEGIN in current and END in current:
            current = current[: current.index(BEGIN)] + text + current[current.index(END) + len(END) :]
        else:
            current = current.rstrip() + "\n\n" + text + "\n"
        target.write_text(current)
        print(f"wrote {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
