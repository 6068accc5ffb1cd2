"""`python -m zoo pack|verify|publish|list|info|fetch|triton`: versioned, checksummed CAM model packages."""

from __future__ import annotations

import json

import click

from runtime.cli import cli_errors
from runtime.formats.files import read_text_file
from zoo.errors import ZooError
from zoo.fetch import fetch
from zoo.index import index_name, publish, read_index, select
from zoo.pack import pack
from zoo.triton import triton_repository
from zoo.verify import verify

INDEX_HELP = "Index file or URL [default: the index that ships with gapcam]."


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Package, verify, publish and fetch gapcam models."""


@main.command("pack")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", required=True, help="Package name: lowercase letters, digits, '.', '_', '-'.")
@click.option("--version", "version", required=True, help="X.Y.Z")
@click.option("--license", "license_", default="unspecified", show_default=True)
@click.option("--card", type=click.Path(exists=True, dir_okay=False), help="Markdown describing the model, for the model card.")
@click.option(
    "--images",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Images for test vectors and sample overlays (repeatable).",
)
@click.option("--metrics", type=click.Path(exists=True, dir_okay=False), help="JSON object of measured metrics to record.")
@click.option("-o", "--out", "out_dir", default=".", show_default=True, type=click.Path(file_okay=False))
@click.option("--overwrite", is_flag=True, help="Replace an existing package of the same name and version.")
@cli_errors
def pack_command(model, name, version, license_, card, images, metrics, out_dir, overwrite):
    """Package an exported MODEL.onnx as OUT/NAME-VERSION/ and OUT/NAME-VERSION.zip."""
    measured = None
    if metrics:
        try:
            measured = json.loads(read_text_file(metrics, "metrics file"))
        except ValueError as err:
            raise ZooError(f"{metrics}: not valid JSON ({err})") from None
        if not isinstance(measured, dict):
            raise ZooError(f"{metrics}: expected a JSON object of metric names and values")
    description = read_text_file(card, "model card") if card else ""
    result = pack(
        model, name, version, out_dir, license=license_, description=description, images=images, metrics=measured, overwrite=overwrite
    )
    click.echo(f"wrote {result.folder}/ ({len(result.manifest.files) + 1} files) and {result.archive}")


@main.command("verify")
@click.argument("package", type=click.Path(exists=True))
@cli_errors
def verify_command(package):
    """Check PACKAGE's checksums and manifest, its model, and replay its test vectors."""
    report = verify(package)
    for check in report.checks:
        click.echo(f"{'ok  ' if check.passed else 'FAIL'} {check.name}: {check.detail}")
    if not report.passed:
        failed = next(check.name for check in report.checks if not check.passed)
        raise click.ClickException(f"{package}: verification failed at '{failed}'")
    click.echo(f"{package}: all checks passed")


@main.command("publish")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False))
@click.option("--index", "index_path", required=True, type=click.Path(dir_okay=False), help="Index file to create or update.")
@click.option("--url", help="URL the index lists [default: the archive's path relative to the index].")
@cli_errors
def publish_command(archive, index_path, url):
    """Add a package ARCHIVE to an index file."""
    entry = publish(archive, index_path, url)
    click.echo(f"{entry['name']}@{entry['version']} -> {index_path} ({entry['size']} bytes, sha256 {entry['sha256'][:16]}...)")


@main.command("list")
@click.option("--index", help=INDEX_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON, for scripts.")
@cli_errors
def list_command(index, as_json):
    """List the packages of an index."""
    entries = read_index(index)
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    click.echo(f"{'name':<20} {'version':<10} {'size':>10}  task")
    for entry in entries:
        click.echo(f"{entry['name']:<20} {entry['version']:<10} {entry['size']:>10}  {entry.get('task', '')}")


@main.command("info")
@click.argument("reference")
@click.option("--index", help=INDEX_HELP)
@cli_errors
def info_command(reference, index):
    """Show the index entry of NAME or NAME@VERSION."""
    click.echo(json.dumps(select(read_index(index), reference, index_name(index)), indent=2))


@main.command("fetch")
@click.argument("reference")
@click.option("--index", help=INDEX_HELP)
@click.option("--timeout", default=60.0, show_default=True, help="Seconds without data before giving up.")
@cli_errors
def fetch_command(reference, index, timeout):
    """Download NAME[@VERSION] into the local store ($GAPCAM_HOME), verified."""
    path = fetch(reference, index, timeout=timeout, log=click.echo)
    click.echo(str(path))


@main.command("triton")
@click.argument("package")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--max-batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@cli_errors
def triton_command(package, out_dir, max_batch_size):
    """Write a Triton model repository for PACKAGE into OUT_DIR."""
    click.echo(f"wrote {triton_repository(package, out_dir, max_batch_size)}")


if __name__ == "__main__":
    main()
