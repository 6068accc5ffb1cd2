"""The model card (`README.md` of a package), written from the manifest so the two never disagree."""

from __future__ import annotations

import json

from runtime.formats.package import Manifest


def _figure(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _precision_lines(manifest: Manifest) -> list[str]:
    """For an INT8 model: how it was quantized and how closely it follows its fp32 model."""
    q = manifest.quantization
    if manifest.precision == "fp32" or not q:
        return []
    fidelity, calibration = q.get("fidelity", {}), q.get("calibration", {})
    lines = [
        f"## Precision: {manifest.precision}",
        "",
        f"{q.get('format', '')} quantization with onnxruntime {q.get('onnxruntime', '')}: {q.get('weights', '')} weights, "
        f"{q.get('activations', '')} activations, {calibration.get('method', '')} calibration on {calibration.get('images', '')} images "
        f"({calibration.get('source', '')}); layers kept in float: {len(q.get('float_nodes', []))}.",
        "",
        f"Fidelity to the fp32 model (sha256 `{q.get('fp32_sha256', '')}`) on {fidelity.get('images', '')} held-out images:",
        "",
        "| figure | value |",
        "| --- | --- |",
    ]
    for key, value in sorted(fidelity.items()):
        if key not in ("images", "source"):
            shown = ", ".join(f"{k} {_figure(v)}" for k, v in value.items()) if isinstance(value, dict) else _figure(value)
            lines.append(f"| {key} | {shown} |")
    speed = q.get("speed", {})
    if speed:  # INT8 models from before the speed gate have none
        lines += ["", f"Speed against the fp32 model, measured at export on {speed.get('machine', '')} (it holds for that machine):", ""]
        lines += ["| batch | fp32 | int8 | speed-up |", "| --- | --- | --- | --- |"]
        for batch, figures in speed.get("batches", {}).items():
            lines.append(f"| {batch} | {figures['fp32_ms']:.2f} ms | {figures['int8_ms']:.2f} ms | {figures['speedup']:.2f}x |")
    return [*lines, ""]


def render_card(manifest: Manifest, description: str = "") -> str:
    pre = manifest.preprocess
    lines = [
        f"# {manifest.name} {manifest.version}",
        "",
        description.strip() or f"A gapcam class-activation-map classifier ({manifest.task}).",
        "",
        "## Use",
        "",
        "```python",
        "from runtime import CamSession",
        "",
        f'session = CamSession("{manifest.name}@{manifest.version}")  # or the path of this folder or archive',
        'result = session.run("image.png")[0]',
        "result.label, result.prob, result.box",
        "```",
        "",
        "## Model",
        "",
        f"- Task: {manifest.task}",
        f"- Labels ({len(manifest.labels)}): {', '.join(manifest.labels)}",
        f"- Input `{manifest.input['name']}`: {manifest.input['dtype']} {manifest.input['shape']}",
        *[f"- Output `{o['name']}`: {o['dtype']} {o['shape']}" for o in manifest.outputs],
        f"- Preprocessing: resize to {pre['width']}x{pre['height']} ({pre['resize']}), color {pre['color']}, "
        f"(x/255 - mean) / std with mean {pre['mean']} and std {pre['std']}",
        f"- License: {manifest.license}",
        *(
            [f"- Runs on onnxruntime {manifest.min_onnxruntime} and newer (opset {manifest.provenance.get('opset', '?')})"]
            if manifest.min_onnxruntime
            else []
        ),
        "",
        "## Metrics",
        "",
        "| metric | value |",
        "| --- | --- |",
        *[f"| {key} | {_figure(value)} |" for key, value in sorted(manifest.metrics.items())],
        "",
        "## Export parity (torch vs onnxruntime, largest difference relative to the largest magnitude)",
        "",
        *[f"- {key}: {_figure(manifest.parity[key]['relative'])}" for key in ("logits", "features", "cams") if key in manifest.parity],
        "",
        *_precision_lines(manifest),
        "## Provenance",
        "",
        *[f"- {key}: {_figure(value)}" for key, value in sorted(manifest.provenance.items())],
        "",
        "## Files",
        "",
        "| file | bytes | sha256 |",
        "| --- | --- | --- |",
        *[f"| {name} | {entry['size']} | `{entry['sha256']}` |" for name, entry in sorted(manifest.files.items()) if name != "README.md"],
        "",
        "`python -m zoo verify` checks every file against its sha256 and replays the test vectors.",
        "",
    ]
    return "\n".join(lines)
