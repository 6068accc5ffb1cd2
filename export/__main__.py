"""`python -m export CHECKPOINT [-o OUT]`: write the ONNX file and report parity."""
from __future__ import annotations

import click

from export.onnx_export import OPSET, export_checkpoint
from runtime.errors import cli_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out", type=click.Path(dir_okay=False), help="ONNX path [default: CHECKPOINT with .onnx].")
@click.option("--opset", type=click.IntRange(min=17), default=OPSET, show_default=True, help="ONNX opset version.")
@cli_errors
def main(checkpoint: str, out: str | None, opset: int) -> None:
    """Export CHECKPOINT to ONNX with logits and features outputs; fail unless torch and onnxruntime agree."""
    report = export_checkpoint(checkpoint, out, opset)
    parity = report.parity
    click.echo(f"inputs:  {', '.join(report.inputs)}")
    click.echo(f"outputs: {', '.join(report.outputs)}")
    click.echo(f"opset {report.opset}, {report.size_bytes / 1e6:.2f} MB, one file, checker passed")
    click.echo(f"parity on {', '.join(parity['inputs'])} ({parity['provider']}), largest difference vs torch:")
    for name in ("logits", "features", "cams"):
        click.echo(f"  {name:<9} {parity[name]['max_abs']:.2e} abs, {parity[name]['relative']:.2e} relative (tolerance {parity['tolerance']:.0e})")
    click.echo(f"  argmax agrees: {'yes' if parity['argmax_agree'] else 'NO'}")
    click.echo(f"wrote {report.path}")


if __name__ == "__main__":
    main()
