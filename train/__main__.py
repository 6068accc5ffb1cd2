"""`python -m train RECIPE ...`: train a GAP-CAM model and write a checkpoint (RECIPE.pt)."""
from __future__ import annotations

import click
from click.core import ParameterSource

from runtime.errors import cli_errors
from train.loop import TrainConfig, fit, resume
from train.models import BACKBONES
from train.recipes import RECIPES


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("recipe", type=click.Choice(sorted(RECIPES)))
@click.option("--data", type=click.Path(exists=True), help="Dataset path (see the recipe); generated datasets ignore it.")
@click.option("--samples", type=click.IntRange(min=10), help="Training images for generated datasets (shapes: 6000).")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs (default: the recipe's).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Batch size (default: the recipe's).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Peak learning rate (default: the recipe's).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for init, data, order and augmentation.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--out", type=click.Path(dir_okay=False), help="Best checkpoint path [default: RECIPE.pt]; the latest goes to OUT's .last.pt.")
@click.option("--resume", "resume_from", type=click.Path(exists=True, dir_okay=False), help="Continue the run saved in this checkpoint.")
@click.option("--stop-after", type=click.IntRange(min=1), help="End after this many epochs; continue later with --resume.")
@click.option("--backbone", type=click.Choice(sorted(BACKBONES)), help="Backbone (default: the recipe's).")
@click.option("--cam-channels", type=click.IntRange(min=1), help="Filters K of the CAM conv (default: the recipe's).")
@click.option("--pool", type=click.Choice(["gap", "gmp"]), help="Global pooling (default: the recipe's, gap).")
@click.pass_context
@cli_errors
def main(ctx: click.Context, recipe: str, resume_from: str | None, **options) -> None:
    """Train RECIPE and write its checkpoint."""
    if resume_from:
        given = {name: value for name, value in options.items() if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
        resume(resume_from, log=click.echo, recipe=recipe, **given)
    else:
        fit(TrainConfig(recipe=recipe, **{**options, "out": options["out"] or f"{recipe}.pt"}), log=click.echo)


if __name__ == "__main__":
    main()
