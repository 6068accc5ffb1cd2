"""`python -m export CHECKPOINT [-o OUT]`: write the ONNX file and report parity."""
from __future__ import annotations

from pathlib import Path

import click

from export.byo import IMAGENET, export_torchvision
from export.errors import ExportError
from export.onnx_export import OPSET, export_checkpoint
from runtime.cli import cli_errors
from runtime.files import read_text_file


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="ONNX path [default: CHECKPOINT with .onnx].")
@click.option("--opset", type=click.IntRange(min=17), default=OPSET, show_default=True, help="ONNX opset version.")
@click.option("--arch", help="CHECKPOINT is a state dict of this torchvision classifier (resnet50, densenet121, ...).")
@click.option("--labels", "labels_file", type=click.Path(exists=True, dir_okay=False), help="With --arch: class names, one per line.")
@click.option("--input-size", nargs=2, type=click.IntRange(min=8), default=(224, 224), show_default=True, help="With --arch: H W.")
@click.option("--mean", nargs=3, type=float, default=IMAGENET["mean"], show_default=True, help="With --arch: RGB mean.")
@click.option("--std", nargs=3, type=float, default=IMAGENET["std"], show_default=True, help="With --arch: RGB std.")
@click.option("--features", help="With --arch: the module whose output is pooled [default: known per family].")
@click.option("--fc", help="With --arch: the final linear layer [default: known per family].")
@cli_errors
def main(checkpoint: str, out: str | None, opset: int, arch: str | None, labels_file: str | None, input_size, mean, std, features, fc) -> None:
    """Export CHECKPOINT (from `python -m train`, or a torchvision state dict with --arch) to ONNX with
    logits and features outputs; fail unless torch and onnxruntime agree."""
    if arch:
        if not labels_file:
            raise ExportError("--arch needs --labels FILE (class names, one per line)")
        labels = [line.strip() for line in read_text_file(labels_file, "labels file").splitlines() if line.strip()]
        target = Path(out) if out else Path(checkpoint).with_suffix(".onnx")
        report = export_torchvision(arch, checkpoint, labels, target, size=tuple(input_size), mean=mean, std=std, features=features, fc=fc, opset=opset)
    else:
        report = export_checkpoint(checkpoint, out, opset)
    parity = report.parity
    click.echo(f"inputs:  {', '.join(report.inputs)}")
    click.echo(f"outputs: {', '.join(report.outputs)}")
    click.echo(f"opset {report.opset}, {report.size_bytes / 1e6:.2f} MB, one file, checker passed")
    click.echo(f"parity on {', '.join(parity['inputs'])} ({parity['provider']}), largest difference vs torch:")
    for name in ("logits", "features", "cams", "class_maps"):
        if name not in parity:
            continue
        click.echo(f"  {name:<9} {parity[name]['max_abs']:.2e} abs, {parity[name]['relative']:.2e} relative (tolerance {parity['tolerance']:.0e})")
    click.echo(f"  argmax agrees: {'yes' if parity['argmax_agree'] else 'NO'}")
    click.echo(f"wrote {report.path}")


if __name__ == "__main__":
    main()
