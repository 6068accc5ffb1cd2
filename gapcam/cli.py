"""`gapcam`: one command for everything the `python -m` entry points do, each loaded only when used.

A subcommand whose extra is not installed (torch for `train`, PyTriton for `serve`) says which extra
to install in one line and exits 1; `gapcam --help` and `gapcam run` never import torch.
"""

from __future__ import annotations

import importlib
import platform
import sys
from dataclasses import dataclass
from importlib import metadata

import click

import gapcam

# The modules each extra brings: an ImportError naming one of them means that extra is missing.
EXTRA_OF_MODULE = {
    "torch": "train",
    "torchvision": "train",
    "onnx": "train",
    "onnxscript": "train",
    "matplotlib": "train",
    "tqdm": "train",
    "pytriton": "serve",
    "tritonclient": "serve",
}


@dataclass(frozen=True)
class Subcommand:
    module: str  # where the click command lives
    attribute: str
    summary: str  # for `gapcam --help`, which must not import the command's module


SUBCOMMANDS = {
    "train": Subcommand(
        "train.__main__", "main", "Train a GAP-CAM model: gapcam train RECIPE (shapes, fer, chest-xray, chestxray14, folder, cub)."
    ),
    "export": Subcommand("export.__main__", "main", "A checkpoint or torch model to ONNX, parity checked (--int8 for CPUs)."),
    "run": Subcommand("runtime.__main__", "predict", "Classify images, videos or a camera and draw where the model looked."),
    "eval": Subcommand("runtime.__main__", "eval_command", "Localization metrics of a model on shapes or a folder with boxes."),
    "explain": Subcommand("runtime.__main__", "explain", "One image's CAMs side by side, as a figure."),
    "faithfulness": Subcommand(
        "runtime.__main__",
        "faithfulness",
        "Whether a model's maps show what it used: ROAD, Average Drop, deletion/insertion, on any images.",
    ),
    "zoo": Subcommand("zoo.__main__", "main", "Package, verify, publish, list and fetch models; write Triton repositories."),
    "serve": Subcommand("gapcam.serve", "main", "Serve a model on a Triton Inference Server (PyTriton)."),
    "web": Subcommand("gapcam.web", "main", "A static web page that runs a model in the browser (onnxruntime-web), offline."),
}


def load_subcommand(name: str) -> click.Command:
    """The click command behind `gapcam NAME`, or a one-line ClickException naming the missing extra."""
    entry = SUBCOMMANDS[name]
    try:
        module = importlib.import_module(entry.module)
    except ImportError as err:
        top = (err.name or "").split(".")[0]
        if top not in EXTRA_OF_MODULE:
            raise
        extra = EXTRA_OF_MODULE[top]
        raise click.ClickException(f"gapcam {name} needs {top}, which is not installed: pip install 'gapcam[{extra}]'") from None
    except Exception as err:  # onnxruntime missing, or two builds installed: gapcam's one-line errors
        raise_one_line(err)
    return getattr(module, entry.attribute)


def raise_one_line(err: Exception) -> None:
    """Re-raise a GapcamError as click's one-line error, anything else as it is.

    The class comes from the already imported `runtime.errors`: importing `runtime` again would
    fail again, when onnxruntime is what failed.
    """
    errors = sys.modules.get("runtime.errors")
    if errors is not None and isinstance(err, errors.GapcamError):
        raise click.ClickException(str(err)) from None
    raise err


class Subcommands(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SUBCOMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SUBCOMMANDS:
            return None
        command = load_subcommand(name)
        command.help = command.help or SUBCOMMANDS[name].summary
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, entry.summary) for name, entry in SUBCOMMANDS.items()])


def version_text() -> str:
    """gapcam's version, the onnxruntime build with its providers, and torch where installed."""
    lines = [f"gapcam {gapcam.__version__} (Python {platform.python_version()}, {platform.system()} {platform.machine()})"]
    try:
        from runtime.inference.compat import OLDEST_ONNXRUNTIME, version_tuple
        from runtime.inference.providers import choose_providers, onnxruntime_builds, ort

        too_old = version_tuple(ort.__version__) < version_tuple(OLDEST_ONNXRUNTIME)
        support = (
            f"older than {OLDEST_ONNXRUNTIME}, the oldest gapcam supports" if too_old else f"gapcam supports {OLDEST_ONNXRUNTIME} and newer"
        )
        lines.append(
            f"onnxruntime: {', '.join(onnxruntime_builds()) or ort.__version__} ({support}); providers available: "
            f"{', '.join(ort.get_available_providers())}; gapcam uses: {', '.join(choose_providers(None))}"
        )
    except Exception as err:
        try:
            raise_one_line(err)
        except click.ClickException as one_line:
            lines.append(f"onnxruntime: {one_line.message}")
    # Read here, not through runtime.inference.providers.installed_versions: that module fails to import when onnxruntime does.
    installed = {(dist.metadata["Name"] or "").lower(): dist.version for dist in metadata.distributions()}
    for name, extra, commands in (("torch", "train", "train and export"), ("nvidia-pytriton", "serve", "serve")):
        version = installed.get(name)
        lines.append(
            f"{name}: {version} ({commands} available)"
            if version
            else f"{name}: not installed ({commands} need pip install 'gapcam[{extra}]')"
        )
    return "\n".join(lines)


def print_version(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(version_text())
        ctx.exit()


@click.group(cls=Subcommands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=print_version,
    help="Versions of gapcam, onnxruntime (and its providers) and torch.",
)
def main() -> None:
    """gapcam: train CAM classifiers, export them to ONNX, run, explain, package and serve them.

    `gapcam run MODEL IMAGE...` needs only the runtime (onnxruntime, numpy, Pillow); `train` and
    `export` need `gapcam[train]`, `serve` needs `gapcam[serve]`. Each subcommand is also
    `python -m train`, `python -m export`, `python -m runtime` (run, eval, explain) and `python -m zoo`.
    """
