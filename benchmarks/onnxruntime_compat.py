"""Which onnxruntime release loads and runs gapcam's graphs at each opset, fp32 and INT8 (QDQ).

`make bench-compat` (or `python benchmarks/onnxruntime_compat.py [docs/compatibility.md]`): exports a
small GAP-CAM model at every opset from 18 to 23 with gapcam's exporter, quantizes each, then for
each onnxruntime release below makes a virtualenv (pip fetches the wheel), loads every file there
and runs a batch. The table it prints (and writes between the markers of the target file) is what
`runtime.inference.compat.ONNXRUNTIME_FOR_OPSET` records. Needs torch and onnx (the train extra) and the
package index.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from export.int8 import NO_GATE, NO_SPEED_GATE, CalibrationData, Int8Options, quantize_model  # noqa: E402
from export.onnx_export import WithClassMaps, to_onnx_proto  # noqa: E402
from export.versions import stamp_lowest_versions  # noqa: E402
from runtime.formats.onnx_model import ModelInfo  # noqa: E402
from runtime.inference.compat import OPSETS as SUPPORTED  # noqa: E402
from runtime.inference.providers import onnxruntime_reason, onnxruntime_version  # noqa: E402
from runtime.inputs.image import Preprocess  # noqa: E402
from train.models import Architecture, GapCam  # noqa: E402

RELEASES = ("1.15.1", "1.16.3", "1.17.3", "1.18.1", "1.19.2", "1.20.1", "1.21.1", "1.22.1")
OPSETS = (18, 19, 20, 21, 22, 23)
BEGIN, END = "<!-- make bench-compat: begin -->", "<!-- make bench-compat: end -->"
LOAD = """
import json, sys
import numpy as np, onnxruntime as ort
found = {}
for path in sys.argv[1:]:
    try:
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        session.run(None, {"input": np.zeros((2, 3, 32, 32), np.float32)})
        found[path] = "ok"
    except Exception as err:
        found[path] = str(err)
print(json.dumps(found))
"""


def models(folder: Path) -> dict[tuple[int, str], Path]:
    """(opset, precision) -> file. Opset 23 is made with torch's exporter directly (fp32 only): gapcam refuses it."""
    torch.manual_seed(0)
    model = GapCam(Architecture(num_classes=3, cam_channels=8, backbone_args={"widths": (8,)})).eval()
    weight = model.fc.weight.detach().numpy()
    info = ModelInfo(labels=list("abc"), preprocess=Preprocess(32, 32), fc_weight=weight, fc_bias=model.fc.bias.detach().numpy())
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(36)]
    files = {}
    for opset in OPSETS:
        if opset in SUPPORTED:
            proto = to_onnx_proto(model, info.preprocess, opset)
        else:
            proto = _unchecked_export(WithClassMaps(model), info.preprocess, opset)
        for key, value in info.to_props().items():
            proto.metadata_props.add(key=key, value=value)
        fp32 = folder / f"opset{opset}.onnx"
        onnx.save(proto, fp32)
        files[(opset, "fp32")] = fp32
        if opset not in SUPPORTED:  # INT8 metadata records the requirement, known only for supported opsets
            continue
        data = CalibrationData(images[:16], images[16:], source="random images")
        options = Int8Options(data, gate=NO_GATE, speed_gate=NO_SPEED_GATE, out=folder / f"opset{opset}.int8.onnx")
        files[(opset, "int8")] = quantize_model(fp32, options).path
    return files


def _unchecked_export(module: torch.nn.Module, spec: Preprocess, opset: int):
    program = torch.onnx.export(
        module.eval(),
        (torch.randn(2, spec.channels, *spec.size),),
        input_names=["input"],
        output_names=["logits", "features", "cams"],
        opset_version=opset,
        dynamo=True,
        external_data=False,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        verbose=False,
    )
    proto = program.model_proto
    stamp_lowest_versions(proto)
    return proto


def try_release(release: str, files: list[Path], work: Path) -> dict[str, str]:
    env = work / f"ort-{release}"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    numpy = "numpy<2" if tuple(int(p) for p in release.split(".")[:2]) < (1, 19) else "numpy"
    subprocess.run(
        [str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"onnxruntime=={release}", numpy],
        check=True,
    )
    done = subprocess.run([str(env / "bin" / "python"), "-c", LOAD, *map(str, files)], capture_output=True, text=True, check=True)
    return {
        path: outcome if outcome == "ok" else onnxruntime_reason(RuntimeError(outcome)) for path, outcome in json.loads(done.stdout).items()
    }


def main(target: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="gapcam-compat-") as work:
        files = models(Path(work))
        results = {release: try_release(release, list(files.values()), Path(work)) for release in RELEASES}
        irs = {key: onnx.load(path).ir_version for key, path in files.items()}
    lines = [
        BEGIN,
        "",
        f"Measured with `make bench-compat` (exported with torch {torch.__version__}, quantized with onnxruntime "
        f"{onnxruntime_version()}; CPU). `ok`: loads and runs a batch of 2; `no`: onnxruntime refuses (reasons below).",
        "",
        "| opset (IR) | " + " | ".join(RELEASES) + " |",
        "| --- | " + " | ".join("---" for _ in RELEASES) + " |",
    ]
    failures = []
    for (opset, precision), path in files.items():
        cells = []
        for release in RELEASES:
            outcome = results[release][str(path)]
            cells.append("ok" if outcome == "ok" else "no")
            if outcome != "ok":
                failures.append(f"- {release}, opset {opset} {precision}: {outcome}")
        lines.append(f"| {opset} {precision} (IR {irs[(opset, precision)]}) | " + " | ".join(cells) + " |")
    reasons = {}
    for failure in failures:  # one example per distinct reason (the tail says it: "... is till opset 19.")
        reasons.setdefault(failure.split(": ", 1)[1][-60:], failure)
    lines += ["", "Reasons, one example each:", "", *reasons.values(), "", END]
    text = "\n".join(lines) + "\n"
    print(text)
    if target is not None:
        current = target.read_text() if target.exists() else ""
        if BEGIN in current and END in current:
            current = current[: current.index(BEGIN)] + text + current[current.index(END) + len(END) + 1 :]
        else:
            current += "\n" + text
        target.write_text(current)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
