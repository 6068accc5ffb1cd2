"""The training loop: warm-up + cosine schedule, evaluation each epoch, best and last checkpoints.

Data streams from `train.data` (decoded per sample in worker processes). Resuming is exact: the
batch order comes from a DistributedSampler seeded by (seed, epoch) and each sample's augmentation
from (seed, epoch, index), and the checkpoint holds the model, optimizer, scheduler, epoch, torch
RNG and sampler state. Under `torchrun` the same loop runs with DistributedDataParallel: each
process streams its share of every epoch, and rank 0 alone evaluates and writes.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields, is_dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import runtime
from runtime.deprecation import renamed
from runtime.errors import CamError, first_line
from runtime.formats.files import check_writable
from runtime.inputs.image import Preprocess
from runtime.maps.boxes import box_accuracy_curve, threshold_grid, threshold_ious
from runtime.maps.cam import normalize_maps
from train.checkpoint import Checkpoint, Provenance, SamplerState, TrainingState, load_checkpoint, save_checkpoint
from train.data import (
    ImageSet,
    TrainingData,
    batches_per_epoch,
    check_batch_size,
    decoding_workers,
    default_workers,
    loader,
    training_sampler,
)
from train.errors import TrainError
from train.evaluate import logits_and_labels, prediction_metrics, write_report
from train.models import STATE_DICT_DETAIL, BackboneInit, GapCam, imagenet_weights_cached
from train.objectives import MultiLabel, Objective, SingleLabel, objective
from train.recipes import CACHE_MODES, DataOptions, Recipe, get_recipe


@dataclass
class TrainConfig:
    """One training run; stored in the checkpoint so that --resume repeats it exactly."""

    recipe: str  # a key of train.recipes.RECIPES
    out: str  # best checkpoint path; the latest goes to OUT with suffix .last.pt
    data: str | None = None  # dataset path (unused by generated datasets)
    samples: int | None = None  # dataset size for generated datasets
    epochs: int | None = None  # None: the recipe's default
    batch_size: int | None = None  # None: the recipe's default
    lr: float | None = None  # None: the recipe's default
    seed: int = 0  # model init, data generation, batch order and augmentation
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    stop_after: int | None = None  # end this invocation after that many epochs; --resume continues
    backbone: str | None = None  # None: the recipe's backbone
    cam_channels: int | None = None  # None: the recipe's K
    pool: str | None = None  # None: the recipe's pooling
    pretrained: bool | None = None  # ImageNet weights; None: the recipe's default where torchvision has them cached
    weights: str | None = None  # start the backbone from this local torchvision state dict
    labels: str | None = None  # --labels FILE: class names in logit order (folder and cub)
    width: int | None = None  # model input width; None: the recipe's
    height: int | None = None  # model input height; None: the recipe's
    color: str | None = None  # "RGB" or "L"; None: the recipe's
    mean: tuple[float, ...] | None = None  # per channel, on the [0, 1] scale; None: the recipe's
    std: tuple[float, ...] | None = None
    workers: int | None = None  # decoding processes per training process; None: default_workers()
    cache: str = "auto"  # decode image files once into a uint8 cache file at model size: auto, on or off
    multilabel: bool | None = None  # sigmoid outputs and weighted BCE (several classes per image); None: the recipe's

    def data_options(self) -> DataOptions:
        return DataOptions.of_run(asdict(self))

    def schedule(self) -> tuple[int, int, float]:
        """(epochs, batch size of all processes together, peak lr) of a `resolved` config.

        Raises TrainError when the config is not resolved (one of them is still None).
        """
        if self.epochs is None or self.batch_size is None or self.lr is None:
            raise TrainError("the training config is not resolved: TrainConfig.resolved fills in the recipe's epochs, batch size and lr")
        return self.epochs, self.batch_size, self.lr

    def resolved(self, recipe: Recipe) -> TrainConfig:
        """The same config with the recipe's defaults filled in."""
        arch, spec = recipe.architecture, recipe.preprocess
        if self.cache not in CACHE_MODES:
            raise TrainError(f"--cache must be one of {CACHE_MODES}, got {self.cache!r}")
        pretrained = self.pretrained
        if pretrained is None:
            pretrained = recipe.pretrained and self.weights is None and imagenet_weights_cached(self.backbone or arch.backbone)
        return replace(
            self,
            epochs=self.epochs or recipe.epochs,
            batch_size=self.batch_size or recipe.batch_size,
            lr=self.lr or recipe.lr,
            backbone=self.backbone or arch.backbone,
            cam_channels=self.cam_channels or arch.cam_channels,
            pool=self.pool or arch.pool,
            pretrained=pretrained,
            width=spec.width,
            height=spec.height,
            color=spec.color,
            mean=spec.mean,
            std=spec.std,
        )

    def build_preprocess(self, spec: Preprocess) -> Preprocess:
        """The recipe's preprocessing with this run's input size, color mode, mean and std. A color
        change without --mean/--std carries the recipe's over (averaged for gray, repeated for RGB)."""
        color = self.color or spec.color

        def carried(values: tuple[float, ...]) -> tuple[float, ...]:
            if color == spec.color:
                return values
            return (sum(values) / len(values),) if color == "L" else values * 3

        try:
            return Preprocess(
                height=self.height or spec.height,
                width=self.width or spec.width,
                color=color,
                mean=tuple(self.mean) if self.mean else carried(spec.mean),
                std=tuple(self.std) if self.std else carried(spec.std),
                resize=spec.resize,
            )
        except CamError as err:
            raise TrainError(f"--size/--color/--mean/--std: {str(err).removeprefix('preprocess: ')}") from None

    def build_recipe(self) -> Recipe:
        """The recipe with this run's classes, input and model choices applied."""
        recipe = get_recipe(self.recipe).resolve_labels(self.data_options())
        spec = self.build_preprocess(recipe.preprocess)
        changes: dict[str, object] = {
            "backbone": self.backbone,
            "cam_channels": self.cam_channels,
            "pool": self.pool,
            "in_channels": spec.channels,
        }
        changes = {key: value for key, value in changes.items() if value is not None}
        if "backbone" in changes and changes["backbone"] != recipe.architecture.backbone:
            changes["backbone_args"] = {}  # the recipe's builder arguments belong to its own backbone
        multilabel = recipe.multilabel if self.multilabel is None else self.multilabel
        return replace(recipe.with_arch(**changes), preprocess=spec, multilabel=multilabel)


def last_path(out: str | Path) -> Path:
    """Where the latest-epoch checkpoint of a run goes: shapes.pt -> shapes.last.pt."""
    out = Path(out)
    return out.with_name(out.stem + ".last" + out.suffix)


class Diverged(TrainError):
    """A loss that is no longer a finite number: the run cannot recover, and must not save it."""


def pick_device(name: str) -> torch.device:
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TrainError(f"--device: {name!r} is not a torch device (try cpu, cuda or auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    if device.type == "cuda" and device.index >= torch.cuda.device_count():
        raise TrainError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def start_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size): under torchrun (WORLD_SIZE > 1) join the process group, NCCL on GPUs, gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def warmup_cosine(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR multiplier: linear warm-up to 1, then cosine decay to 0 at total_steps."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_optimizer(model: GapCam, recipe: Recipe, lr: float) -> torch.optim.Optimizer:
    """The recipe's optimizer; the head (CAM conv and fc) at `recipe.head_lr_scale` times the backbone's
    rate where that is not 1 (one parameter group otherwise, as checkpoints of earlier gapcam have)."""
    groups: list[torch.nn.Parameter] | list[dict[str, Any]] = list(model.parameters())
    if recipe.head_lr_scale != 1:
        head = [*model.cam_conv.parameters(), *model.fc.parameters()]
        groups = [{"params": list(model.backbone.parameters()), "lr": lr}, {"params": head, "lr": lr * recipe.head_lr_scale}]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=recipe.weight_decay)
    raise TrainError(f"recipe {recipe.name}: unknown optimizer {recipe.optimizer!r}")


def validation_metrics(goal: Objective, logits: torch.Tensor, targets: torch.Tensor) -> dict:
    """The unweighted loss and the objective's score (accuracy, or mean ROC AUC) of a validation pass's logits."""
    return {
        "loss": goal.loss(logits, targets, None, reduction="sum").item() / max(1, len(targets)),
        goal.score: goal.validation_score(logits, targets),
    }


def box_classes(targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions, class) of the images whose one class a box calibration can read the CAM of: every
    image of single-label targets; the images with exactly one positive class of multi-label ones."""
    if targets.ndim == 1:
        return torch.arange(len(targets)), targets
    single = torch.nonzero(targets.sum(dim=1) == 1).flatten()
    return single, targets[single].argmax(dim=1)


@torch.no_grad()
def calibrate_box_threshold(
    model: GapCam, images: ImageSet, boxes: list[np.ndarray | None], device, workers: int, batch_size: int
) -> dict | None:
    """The CAM threshold with the best box accuracy on the validation images that have true boxes
    (true class's CAM, IoU >= 0.5 with any of its boxes; multi-label images with one positive class
    only, `box_classes`); None when none has. `batch_size` images
    at a time: the training batch, so that calibration never needs more memory than training.

    Choe et al. (CVPR 2020) show the best threshold depends on the model; the paper's 0.2 is kept
    for data without boxes.
    """
    if all(b is None for b in boxes):
        return None
    model.eval()
    thresholds, ious = threshold_grid(), []
    for batch in loader(images, batch_size, workers):
        positions, classes = box_classes(batch.y)
        boxed = torch.tensor([boxes[index] is not None for index in batch.index[positions].tolist()], dtype=torch.bool)
        chosen, y = positions[boxed], classes[boxed]
        if not len(chosen):
            continue
        x = batch.x[chosen]
        _, features = model(x.to(device))
        raw = model.cams(features, y[:, None].to(device))
        up = F.interpolate(raw, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        for cam, index in zip(normalize_maps(up.cpu().numpy()), batch.index[chosen].tolist(), strict=True):
            ious.append(threshold_ious(cam, boxes[index], thresholds)[0])
    if not ious:
        return None
    curve = box_accuracy_curve(np.array(ious), 0.5)
    best = int(np.argmax(curve))
    return {
        "box_threshold": float(thresholds[best]),
        "val_max_box_accuracy": float(curve[best]),
        "val_box_accuracy_curve": {str(t): float(a) for t, a in zip(thresholds, curve, strict=True)},
        "val_images_with_boxes": len(ious),
    }


class SkippedImages:
    """Unreadable images met while streaming, each reported once."""

    def __init__(self, log):
        self.log, self.seen = log, {}

    def add(self, errors: list[str]) -> None:
        for error in errors:
            if error not in self.seen:
                self.seen[error] = None
                self.log(f"skipped an unreadable image: {error}")

    def note(self) -> list[str]:
        return [f"skipped {len(self.seen)} unreadable image(s) while streaming, e.g. {next(iter(self.seen))}"] if self.seen else []


def train_one_epoch(
    net,
    optimizer,
    scheduler,
    batches,
    recipe: Recipe,
    config: TrainConfig,
    epoch: int,
    device,
    class_weights: torch.Tensor | None,
    rank: int,
    skipped: SkippedImages,
) -> dict:
    """One pass over this process's share of the training set: its mean loss and the share of
    right decisions (the objective's `train_score`)."""
    net.train()
    goal = objective(recipe.multilabel)
    loss_sum, correct, decided, seen = 0.0, 0, 0, 0
    with tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, disable=None if rank == 0 else True, unit="batch") as bar:
        for step, batch in enumerate(bar):
            skipped.add(batch.errors)
            if not len(batch.y):
                scheduler.step()  # keep the schedule where an uninterrupted run has it
                continue
            xb, yb = batch.x.to(device, non_blocking=True), batch.y.to(device, non_blocking=True)
            logits, _ = net(xb)
            loss = goal.loss(logits, yb, class_weights)
            if not torch.isfinite(loss):
                raise Diverged(f"epoch {epoch + 1}, batch {step + 1}: the training loss is {loss.item()}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(yb)
            right, made = goal.correct(logits.detach(), yb)
            correct, decided, seen = correct + right, decided + made, seen + len(yb)
            bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.3f}", acc=f"{correct / max(decided, 1):.3f}")
    return {"loss": loss_sum / max(seen, 1), goal.train_score: correct / max(decided, 1)}


# Deprecated in 0.2 (runtime.deprecation): the single-label objective's weights.
inverse_frequency_weights = renamed(
    "train.loop.inverse_frequency_weights", SingleLabel().class_weights, "train.objectives.SingleLabel().class_weights"
)


def run_provenance(
    config: TrainConfig, recipe: Recipe, data: TrainingData, history: list[dict], processes: int, notes: list[str]
) -> Provenance:
    """Where the weights after `len(history)` epochs come from."""
    return Provenance(
        recipe=recipe.name,
        data_fingerprint=data.fingerprint,
        images={"train": len(data.train), "val": len(data.val)},
        epochs=len(history),
        seed=config.seed,
        metrics={key: history[-1][key] for key in (f"val_{objective(recipe.multilabel).score}", "val_loss")},
        notes=notes,
        processes=processes,
        init="imagenet" if config.pretrained else ("weights file" if config.weights else "random"),
        gapcam_version=runtime.__version__,
        torch_version=str(torch.__version__),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def run_checkpoint(
    *,
    config: TrainConfig,
    recipe: Recipe,
    data: TrainingData,
    model: GapCam,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    history: list[dict],
    best_accuracy: float,
    processes: int,
    notes: list[str],
    sampler: SamplerState,
) -> Checkpoint:
    """The checkpoint of a run after `len(history)` epochs, with the state that `--resume` needs
    (`sampler`: what fixes the batch order of the next epoch). Its tensors are the live ones: see `cpu_copy`."""
    return Checkpoint(
        architecture=recipe.architecture.to_dict(),
        labels=list(recipe.labels),
        preprocess=recipe.preprocess.to_dict(),
        provenance=run_provenance(config, recipe, data, history, processes, notes),
        model={k: v.detach().cpu() for k, v in model.state_dict().items()},
        samples=data.samples,
        activation=objective(recipe.multilabel).activation,
        training=TrainingState(
            epoch=len(history),
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            rng=torch.get_rng_state(),
            history=list(history),
            best_accuracy=best_accuracy,
            config=asdict(config),
            sampler=sampler,
        ),
    )


def cpu_copy(value: Any) -> Any:
    """`value` (a checkpoint, or any of its parts) with every tensor copied to the CPU: an epoch's
    checkpoint kept while training goes on changing the model's and the optimizer's tensors in place."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: cpu_copy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(cpu_copy(item) for item in value)
    if is_dataclass(value) and not isinstance(value, type):
        return replace(value, **{f.name: cpu_copy(getattr(value, f.name)) for f in fields(value) if f.init})
    return value


def resume(path: str | Path, log: Callable[[str], None] = print, **overrides) -> Path:
    """Continue the run saved in checkpoint `path`; `overrides` replace saved config fields (epochs, device, out, ...)."""
    state = load_checkpoint(path)
    if state.training is None:
        raise TrainError(f"{path}: checkpoint holds no training state to resume from")
    try:
        saved = replace(TrainConfig(**state.training.config), stop_after=None)
    except (KeyError, TypeError) as err:
        raise TrainError(f"{path}: checkpoint's training config is malformed ({first_line(err)})") from None
    if overrides.get("recipe", saved.recipe) != saved.recipe:
        raise TrainError(f"{path}: checkpoint is from recipe {saved.recipe!r}, not {overrides['recipe']!r}")
    multilabel = state.activation == "sigmoid"
    if overrides.get("multilabel") not in (None, multilabel):
        raise TrainError(f"{path}: the run trains a {'multi' if multilabel else 'single'}-label model; --resume cannot change that")
    log(f"resuming {path} after epoch {state.training.epoch}")
    return fit(replace(saved, **overrides), log, state)


def fit(config: TrainConfig, log: Callable[[str], None] = print, state: Checkpoint | None = None) -> Path:
    """Train per `config`, or continue from a loaded checkpoint `state`; returns the best checkpoint path."""
    recipe = config.build_recipe()
    weights_unsaid = config.pretrained is None and config.weights is None and state is None
    config = config.resolved(recipe)
    for path, what in ((config.out, "best checkpoint"), (last_path(config.out), "latest checkpoint")):
        try:
            check_writable(path, what)  # before the data is prepared and an epoch is spent
        except CamError as err:
            raise TrainError(str(err)) from None
    device = pick_device(config.device)
    rank, world = start_distributed(device)
    if rank != 0:
        log = lambda line: None  # noqa: E731 - only rank 0 talks and writes
    if weights_unsaid and recipe.pretrained and not config.pretrained:
        log(
            f"training {config.backbone} from scratch: torchvision's ImageNet weights are not in its cache "
            "(--pretrained downloads them; --no-pretrained says so and silences this)"
        )
    try:
        with sigterm_interrupts():
            return _fit(config, recipe, device, rank, world, log, state)
    finally:
        if world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def _fit(config: TrainConfig, recipe: Recipe, device, rank: int, world: int, log, state: Checkpoint | None) -> Path:
    """Load the data (into a cache folder that lives as long as the run), then train."""
    _, batch_size, _ = config.schedule()
    check_batch_size(batch_size, world)
    workers = config.workers if config.workers is not None else default_workers(world, spare=0)  # builds the cache, if any
    with tempfile.TemporaryDirectory(prefix="gapcam-cache-") as cache_dir:
        started = time.time()
        data = recipe.load(config.data_options(), config.cache, cache_dir, workers)
        workers = decoding_workers(data.train, config.workers, world, device.type == "cuda")
        for note in data.notes:
            log(note)
        log(
            f"{recipe.name}: {len(recipe.labels)} classes, {len(data.train)} training and {len(data.val)} validation images "
            f"({time.time() - started:.1f}s to prepare), {workers} decoding worker(s), device {device}"
            + (f", {world} processes" if world > 1 else "")
        )
        return _train(config, recipe, data, workers, device, rank, world, log, state, started)


def _train(
    config: TrainConfig,
    recipe: Recipe,
    data: TrainingData,
    workers: int,
    device,
    rank: int,
    world: int,
    log,
    state: Checkpoint | None,
    started: float,
) -> Path:
    epochs, batch_size, lr = config.schedule()
    torch.manual_seed(config.seed)
    init = BackboneInit() if state is not None else BackboneInit(bool(config.pretrained), config.weights)
    model = GapCam(recipe.architecture, init).to(device)
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    optimizer = make_optimizer(model, recipe, lr)
    steps_per_epoch = batches_per_epoch(len(data.train), batch_size, world)
    schedule = warmup_cosine(epochs * steps_per_epoch, warmup_steps=max(1, steps_per_epoch // 2))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    sampler = training_sampler(data.train, config.seed, rank, world)
    batches = loader(data.train, batch_size // world, workers, sampler, pin_memory=device.type == "cuda")
    goal = objective(recipe.multilabel)
    weighted = recipe.class_weighted or recipe.multilabel  # a multi-label loss always weighs each class's positives
    class_weights = goal.class_weights(torch.from_numpy(data.train.labels), len(recipe.labels)).to(device) if weighted else None
    if class_weights is not None:
        weights = zip(recipe.labels, class_weights.tolist(), strict=True)  # one weight per class (labels index recipe.labels)
        kind = "positives weighted by negatives/positives" if recipe.multilabel else "inverse frequency"
        log(f"class weights ({kind}): " + ", ".join(f"{label} {weight:.2f}" for label, weight in weights))
    start_epoch, history, best = 0, [], -1.0
    if state is not None:
        if state.training is None:
            raise TrainError(f"{config.out}: the checkpoint holds no training state to resume from")
        training = state.training
        try:
            model.load_state_dict(state.model)
            optimizer.load_state_dict(training.optimizer)
            scheduler.load_state_dict(training.scheduler)
            torch.set_rng_state(training.rng)
            start_epoch, history, best = int(training.epoch), list(training.history), float(training.best_accuracy)
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            raise TrainError(
                f"{config.out}: the checkpoint's training state does not fit this run ({first_line(err, STATE_DICT_DETAIL)})"
            ) from None
        saved_sampler = training.sampler or SamplerState(seed=config.seed, epoch=start_epoch, processes=world)  # files before the sampler
        sampler.seed = int(saved_sampler.seed)
        if int(saved_sampler.processes) != world:
            log(
                f"note: the run was saved with {saved_sampler.processes} process(es) and continues with {world}: "
                "its batch order now differs from an uninterrupted run's"
            )

    skipped = SkippedImages(log)
    out, last = Path(config.out), last_path(config.out)
    best_checkpoint: Checkpoint | None = None  # the best epoch's, kept in memory and written once when the run ends
    if state is not None and not out.exists() and resumes_its_best(state):
        best_checkpoint = state  # no best file holds these weights yet: they are the best until an epoch beats them
    try:
        for epoch in range(start_epoch, epochs):
            tick = time.time()
            sampler.set_epoch(epoch)
            data.train.epoch = epoch  # each sample's augmentation is seeded by (seed, epoch, index)
            try:
                train_metrics = train_one_epoch(
                    net, optimizer, scheduler, batches, recipe, config, epoch, device, class_weights, rank, skipped
                )
                if rank == 0:
                    logits, labels, errors = logits_and_labels(model, data.val, device, workers, batch_size // world)
                    skipped.add(errors)
                    val_metrics = validation_metrics(goal, logits, labels)
                    if not math.isfinite(val_metrics["loss"]):
                        raise Diverged(f"epoch {epoch + 1}: the validation loss is {val_metrics['loss']}")
            except Diverged as err:
                saved = epoch > start_epoch or state is not None  # this run (or the one it resumes) wrote `last`
                kept = f"the last good checkpoint is {last}, after epoch {epoch}" if saved else "no epoch finished, so nothing was saved"
                raise TrainError(f"training diverged at {err}; stopped (try a lower --lr); {kept}") from None
            if rank == 0:
                history.append(
                    {
                        "epoch": epoch + 1,
                        "train_loss": train_metrics["loss"],
                        f"train_{goal.train_score}": train_metrics[goal.train_score],
                        "val_loss": val_metrics["loss"],
                        f"val_{goal.score}": val_metrics[goal.score],
                        "lr": float(scheduler.get_last_lr()[0]),  # a float: LambdaLR scales the float lr
                        "seconds": time.time() - tick,
                    }
                )
                improved = val_metrics[goal.score] > best
                best = max(best, val_metrics[goal.score])
                checkpoint = run_checkpoint(
                    config=config,
                    recipe=recipe,
                    data=data,
                    model=model,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    history=history,
                    best_accuracy=best,
                    processes=world,
                    notes=data.notes + skipped.note(),
                    sampler=SamplerState(seed=sampler.seed, epoch=epoch + 1, processes=world),
                )
                save_checkpoint(last, checkpoint)
                if improved:
                    best_checkpoint = cpu_copy(checkpoint)
                log(
                    f"epoch {epoch + 1}/{epochs}  train loss {train_metrics['loss']:.4f} {goal.train_score} "
                    f"{train_metrics[goal.train_score]:.3f}  val loss {val_metrics['loss']:.4f} "
                    f"{goal.score} {val_metrics[goal.score]:.3f}  "
                    f"{time.time() - tick:.1f}s{'  (best)' if improved else ''}"
                )
            if config.stop_after is not None and epoch + 1 - start_epoch >= config.stop_after:
                log(f"stopped after {config.stop_after} epoch(s); continue with --resume {last}")
                break
    finally:  # however the run ends (done, stopped, diverged, interrupted), the best epoch is kept on disk
        if best_checkpoint is not None:
            best_checkpoint = write_best(out, best_checkpoint, model, data, device, workers, batch_size // world, log)
    if rank == 0 and not out.exists():  # a resumed run that did not improve, whose earlier best file is gone
        raise TrainError(
            f"{out}: no best checkpoint: no epoch of this run beat the validation {goal.score} {best:.3f} of the run it "
            f"resumes, and that run's best checkpoint is missing; the latest checkpoint is {last}"
        )
    if rank == 0:
        # a resumed run that did not improve reports on the best checkpoint it started from
        final = best_checkpoint if best_checkpoint is not None else load_checkpoint(out)
        model.load_state_dict(final.model)
        report = write_val_report(out, model, data, device, workers, batch_size // world, history, list(recipe.labels), final.thresholds)
        log(
            f"best validation {goal.score} {best:.3f}; wrote {out} (best), {last} (latest) and {', '.join(p.name for p in report)} "
            f"in {time.time() - started:.0f}s"
        )
    return out


def resumes_its_best(state: Checkpoint) -> bool:
    """Whether a checkpoint's own weights are its run's best so far: its last epoch reached the best validation score."""
    training = state.training
    key = f"val_{objective(state.activation == 'sigmoid').score}"
    return training is not None and bool(training.history) and training.history[-1][key] >= training.best_accuracy


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a scheduler's preemption, `kill`, torchrun passing it on) interrupts training as Ctrl-C
    does, so that the best epoch, kept in memory until the run ends, is still written. Main thread only
    (where Python runs signal handlers); the previous handler is restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def write_best(out: Path, best: Checkpoint, model: GapCam, data: TrainingData, device, workers: int, batch_size: int, log) -> Checkpoint:
    """Write the best epoch's checkpoint, once, with the CAM box threshold calibrated on its weights
    where the data has boxes, and a multi-label model's per-class thresholds calibrated on the
    validation set (this leaves those weights in `model`); returns what it wrote.

    Calibration runs once, on the final best weights, rather than at every improvement: on the
    shapes demo it costs about 5 s, which every improved epoch would pay again.
    """
    model.load_state_dict(best.model)
    if best.activation == "sigmoid":
        logits, targets, _ = logits_and_labels(model, data.val, device, workers, batch_size)
        best = replace(best, thresholds=MultiLabel().thresholds(logits, targets))
        log("decision thresholds (best validation F1): " + ", ".join(f"{t:.2f}" for t in best.thresholds))
    loc = calibrate_box_threshold(model, data.val, data.val_boxes, device, workers, batch_size) if data.val_boxes is not None else None
    if loc is not None:
        best = replace(best, localization=loc)
        log(
            f"CAM box threshold {loc['box_threshold']:.2f} (validation box accuracy {loc['val_max_box_accuracy']:.3f} on "
            f"{loc['val_images_with_boxes']} images with boxes; {loc['val_box_accuracy_curve']['0.2']:.3f} at the paper's 0.2)"
        )
    save_checkpoint(out, best)
    return best


def write_val_report(
    out: Path,
    model: GapCam,
    data: TrainingData,
    device,
    workers: int,
    batch_size: int,
    history: list[dict],
    labels: list[str],
    thresholds: list[float],
) -> list[Path]:
    """The validation metrics and plots of `model` (holding the best weights, and `thresholds` for a
    multi-label model), beside the checkpoint."""
    logits, truth, _ = logits_and_labels(model, data.val, device, workers, batch_size)
    metrics = prediction_metrics(logits, truth, labels, thresholds)
    return write_report(out.with_suffix(""), "val", {**metrics, "checkpoint": str(out), "split": "val"}, history)
