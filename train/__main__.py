"""`python -m train RECIPE ...` trains a GAP-CAM model (RECIPE.pt); `python -m train eval CHECKPOINT` scores one."""

from __future__ import annotations

import click
from click.core import ParameterSource

from runtime.cli import DefaultGroup, cli_errors
from train.errors import TrainError
from train.evaluate import evaluate_checkpoint
from train.loop import TrainConfig, fit, resume
from train.models import BACKBONES
from train.recipes import CACHE_MODES, RECIPES, SPLITS


class RecipeFirst(DefaultGroup):
    """`python -m train RECIPE ...` is short for `python -m train fit RECIPE ...`."""

    default_command = "fit"


@click.group(cls=RecipeFirst, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Train GAP-CAM models: `python -m train RECIPE [OPTIONS]` (RECIPE: shapes, fer, chest-xray,
    folder for your own image folder, cub), or evaluate one: `python -m train eval CHECKPOINT`."""


def parse_size(ctx, param, value: str | None) -> tuple[int, int] | None:
    """--size N (square) or WIDTHxHEIGHT -> (width, height)."""
    if value is None:
        return None
    parts = value.lower().split("x")
    try:
        width, height = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give N or WIDTHxHEIGHT, e.g. 224 or 256x200") from None
    if len(parts) > 2 or min(width, height) < 8 or max(width, height) > 4096:
        raise click.BadParameter(f"{value!r}: give N or WIDTHxHEIGHT, each side 8 to 4096 pixels")
    return width, height


def parse_floats(ctx, param, value: str | None) -> tuple[float, ...] | None:
    """--mean / --std: one number per channel, comma-separated."""
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: give numbers separated by commas, e.g. 0.485,0.456,0.406") from None


@main.command("fit")
@click.argument("recipe", type=click.Choice(sorted(RECIPES)))
@click.option("--data", type=click.Path(exists=True), help="Dataset path (see the recipe); generated datasets ignore it.")
@click.option("--samples", type=click.IntRange(min=10), help="Training images for generated datasets (shapes: 6000).")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs (default: the recipe's).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Batch size (default: the recipe's).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Peak learning rate (default: the recipe's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for init, data, split, order and augmentation.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option(
    "--out", type=click.Path(dir_okay=False), help="Best checkpoint path [default: RECIPE.pt]; the latest goes to OUT's .last.pt."
)
@click.option("--resume", "resume_from", type=click.Path(exists=True, dir_okay=False), help="Continue the run saved in this checkpoint.")
@click.option("--stop-after", type=click.IntRange(min=1), help="End after this many epochs; continue later with --resume.")
@click.option("--backbone", type=click.Choice(sorted(BACKBONES)), help="Backbone (default: the recipe's).")
@click.option("--cam-channels", type=click.IntRange(min=1), help="Filters K of the CAM conv (default: the recipe's).")
@click.option("--pool", type=click.Choice(["gap", "gmp"]), help="Global pooling (default: the recipe's, gap).")
@click.option(
    "--pretrained/--no-pretrained",
    default=None,
    help="Start from torchvision's ImageNet weights (downloaded by torchvision) [default: folder and cub "
    "when torchvision has them cached, else from scratch].",
)
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Start from a local torchvision state dict of the backbone.")
@click.option(
    "--labels",
    type=click.Path(exists=True, dir_okay=False),
    help="Class names in logit order, one per line [default: folder: the sorted class folders; cub: classes.txt].",
)
@click.option(
    "--size",
    callback=parse_size,
    metavar="N|WxH",
    help="Model input size: N for NxN or WIDTHxHEIGHT (default: the recipe's; folder and cub 224).",
)
@click.option("--color", type=click.Choice(["RGB", "L"]), help="Input color mode, RGB or L (grayscale) (default: the recipe's).")
@click.option(
    "--mean",
    callback=parse_floats,
    metavar="M[,M,M]",
    help="Per-channel mean on the [0, 1] scale (default: the recipe's; ImageNet's for folder and cub).",
)
@click.option("--std", callback=parse_floats, metavar="S[,S,S]", help="Per-channel std on the [0, 1] scale (default: the recipe's).")
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    help=(
        "Decoding processes per training process [default on a GPU: the usable cores less one, at most 8; "
        "on the CPU, or for data already in memory: none]."
    ),
)
@click.option(
    "--cache",
    type=click.Choice(CACHE_MODES),
    default="auto",
    show_default=True,
    help="Decode image files once into a uint8 file at model size (auto: when it fits in 4 GiB).",
)
@click.option(
    "--multilabel/--single-label",
    default=None,
    help="Each class present or not: sigmoid outputs, BCE weighted per class, thresholds calibrated on validation "
    "[default: the recipe's; chestxray14: multi-label].",
)
@click.pass_context
@cli_errors
def fit_command(ctx: click.Context, /, recipe: str, resume_from: str | None, size: tuple[int, int] | None, **options) -> None:
    """Train RECIPE and write its checkpoint, validation metrics and plots."""
    if size is not None:
        options["width"], options["height"] = size
    if resume_from:
        given = {name: value for name, value in options.items() if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
        frozen = {"labels", "color", "mean", "std", "backbone", "cam_channels", "pool", "multilabel"}
        changed = sorted(set(given) & frozen) + (["size"] if size else [])
        if changed:
            raise TrainError(
                f"--resume continues a run as it was set up: {', '.join('--' + n.replace('_', '-') for n in changed)} cannot change"
            )
        resume(resume_from, log=click.echo, recipe=recipe, **given)
    else:
        fit(TrainConfig(recipe=recipe, **{**options, "out": options["out"] or f"{recipe}.pt"}), log=click.echo)


@main.command("eval")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False))
@click.option("--data", type=click.Path(exists=True), help="Dataset path [default: the one the checkpoint was trained on].")
@click.option("--split", type=click.Choice(SPLITS), default="test", show_default=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Folder for the report [default: beside the checkpoint].")
@click.option("--device", default="cpu", show_default=True)
@cli_errors
def eval_command(checkpoint: str, data: str | None, split: str, out_dir: str | None, device: str) -> None:
    """Accuracy, per-class precision/recall/F1, confusion matrix (and ROC AUC, sensitivity, specificity for two classes);
    for a multi-label model, each class's ROC AUC and F1 at its threshold, and their means."""
    metrics, written = evaluate_checkpoint(checkpoint, data, split, out_dir, device)
    if metrics.get("activation") == "sigmoid":

        def auroc(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.4f}"

        click.echo(f"{split}: {metrics['images']} images, mean ROC AUC {auroc(metrics['mean_auroc'])}, mean F1 {metrics['mean_f1']:.4f}")
        for label, row in metrics["per_class"].items():
            click.echo(
                f"  {label:<18} AUROC {auroc(row['auroc'])}  F1 {row['f1']:.3f} at {row['threshold']:.2f}  "
                f"precision {row['precision']:.3f}  recall {row['recall']:.3f}  n={row['support']}"
            )
        click.echo("wrote " + ", ".join(str(p) for p in written))
        return
    click.echo(f"{split}: {metrics['images']} images, accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}")
    for label, row in metrics["per_class"].items():
        click.echo(f"  {label:<12} precision {row['precision']:.3f}  recall {row['recall']:.3f}  F1 {row['f1']:.3f}  n={row['support']}")
    if "roc_auc" in metrics:
        click.echo(
            f"  ROC AUC {metrics['roc_auc']:.4f}  sensitivity {metrics['sensitivity']:.3f}  specificity {metrics['specificity']:.3f}"
        )
    click.echo("wrote " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
    main()
