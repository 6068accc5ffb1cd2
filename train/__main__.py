"""`python -m train RECIPE ...` trains a GAP-CAM model (RECIPE.pt); `python -m train eval CHECKPOINT` scores one."""
from __future__ import annotations

import click
from click.core import ParameterSource

from runtime.cli import DefaultGroup, cli_errors
from train.evaluate import evaluate_checkpoint
from train.loop import TrainConfig, fit, resume
from train.models import BACKBONES
from train.recipes import RECIPES, SPLITS


class RecipeFirst(DefaultGroup):
    """`python -m train RECIPE ...` is short for `python -m train fit RECIPE ...`."""

    default_command = "fit"


@click.group(cls=RecipeFirst, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Train GAP-CAM models: `python -m train RECIPE [OPTIONS]` (RECIPE: shapes, fer, chest-xray),
    or evaluate one: `python -m train eval CHECKPOINT`."""


@main.command("fit")
@click.argument("recipe", type=click.Choice(sorted(RECIPES)))
@click.option("--data", type=click.Path(exists=True), help="Dataset path (see the recipe); generated datasets ignore it.")
@click.option("--samples", type=click.IntRange(min=10), help="Training images for generated datasets (shapes: 6000).")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs (default: the recipe's).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Batch size (default: the recipe's).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Peak learning rate (default: the recipe's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for init, data, split, order and augmentation.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--out", type=click.Path(dir_okay=False), help="Best checkpoint path [default: RECIPE.pt]; the latest goes to OUT's .last.pt.")
@click.option("--resume", "resume_from", type=click.Path(exists=True, dir_okay=False), help="Continue the run saved in this checkpoint.")
@click.option("--stop-after", type=click.IntRange(min=1), help="End after this many epochs; continue later with --resume.")
@click.option("--backbone", type=click.Choice(sorted(BACKBONES)), help="Backbone (default: the recipe's).")
@click.option("--cam-channels", type=click.IntRange(min=1), help="Filters K of the CAM conv (default: the recipe's).")
@click.option("--pool", type=click.Choice(["gap", "gmp"]), help="Global pooling (default: the recipe's, gap).")
@click.option("--pretrained", is_flag=True, help="Start from torchvision's ImageNet weights (downloaded by torchvision).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False), help="Start from a local torchvision state dict of the backbone.")
@click.pass_context
@cli_errors
def fit_command(ctx: click.Context, recipe: str, resume_from: str | None, **options) -> None:
    """Train RECIPE and write its checkpoint, validation metrics and plots."""
    if resume_from:
        given = {name: value for name, value in options.items() if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
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
    """Accuracy, per-class precision/recall/F1, confusion matrix (and ROC AUC, sensitivity, specificity for two classes)."""
    metrics, written = evaluate_checkpoint(checkpoint, data, split, out_dir, device)
    click.echo(f"{split}: {metrics['images']} images, accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}")
    for label, row in metrics["per_class"].items():
        click.echo(f"  {label:<12} precision {row['precision']:.3f}  recall {row['recall']:.3f}  F1 {row['f1']:.3f}  n={row['support']}")
    if "roc_auc" in metrics:
        click.echo(f"  ROC AUC {metrics['roc_auc']:.4f}  sensitivity {metrics['sensitivity']:.3f}  specificity {metrics['specificity']:.3f}")
    click.echo("wrote " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
    main()
