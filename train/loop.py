"""The training loop: warm-up + cosine schedule, evaluation each epoch, best and last checkpoints.

Resuming is exact: batch order and augmentation come from a generator seeded by (seed, epoch), and
the checkpoint holds the model, optimizer, scheduler, epoch and RNG state. Under `torchrun` the
same loop runs with DistributedDataParallel: every process takes its share of each batch, and
rank 0 alone evaluates and writes.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from runtime.boxes import box_accuracy_curve, threshold_grid, threshold_ious
from runtime.cam import normalize_maps
from runtime.errors import CamError, first_line
from runtime.files import check_writable
from train.checkpoint import Checkpoint, load_checkpoint, run_checkpoint, save_checkpoint
from train.errors import TrainError
from train.evaluate import classification_metrics, logits_of, predict, write_report
from train.models import STATE_DICT_DETAIL, BackboneInit, GapCam
from train.prepared import PreparedData, augment
from train.recipes import DataOptions, Recipe, get_recipe


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
    pretrained: bool = False  # start the backbone from torchvision's ImageNet weights
    weights: str | None = None  # start the backbone from this local torchvision state dict

    def resolved(self, recipe: Recipe) -> "TrainConfig":
        """The same config with the recipe's defaults filled in."""
        arch = recipe.architecture
        return replace(
            self,
            epochs=self.epochs or recipe.epochs,
            batch_size=self.batch_size or recipe.batch_size,
            lr=self.lr or recipe.lr,
            backbone=self.backbone or arch.backbone,
            cam_channels=self.cam_channels or arch.cam_channels,
            pool=self.pool or arch.pool,
        )

    def build_recipe(self) -> Recipe:
        """The recipe with this run's model choices applied."""
        recipe = get_recipe(self.recipe)
        changes = {"backbone": self.backbone, "cam_channels": self.cam_channels, "pool": self.pool}
        changes = {key: value for key, value in changes.items() if value is not None}
        if "backbone" in changes and changes["backbone"] != recipe.architecture.backbone:
            changes["backbone_args"] = {}  # the recipe's builder arguments belong to its own backbone
        return recipe.with_arch(**changes)


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
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=recipe.weight_decay)
    raise TrainError(f"recipe {recipe.name}: unknown optimizer {recipe.optimizer!r}")


def validation_metrics(model: GapCam, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict:
    """Loss and accuracy of `model` on a preprocessed set."""
    logits, count = logits_of(model, x, device), max(1, len(x))
    return {"loss": F.cross_entropy(logits, y, reduction="sum").item() / count, "accuracy": (logits.argmax(1) == y).sum().item() / count}


@torch.no_grad()
def calibrate_box_threshold(model: GapCam, x: torch.Tensor, y: torch.Tensor, boxes: np.ndarray, device, batch_size: int = 256) -> dict:
    """The CAM threshold with the best box accuracy on validation boxes (true class's CAM, IoU >= 0.5).

    Choe et al. (CVPR 2020) show the best threshold depends on the model; the paper's 0.2 is kept
    for data without boxes.
    """
    model.eval()
    cams = []
    for start in range(0, len(x), batch_size):
        _, features = model(x[start : start + batch_size].to(device))
        raw = model.cams(features, y[start : start + batch_size, None].to(device))
        up = F.interpolate(raw, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        cams.append(normalize_maps(up.cpu().numpy()))
    thresholds = threshold_grid()
    ious = np.array([threshold_ious(cam, box, thresholds)[0] for cam, box in zip(np.concatenate(cams), boxes)])
    curve = box_accuracy_curve(ious, 0.5)
    best = int(np.argmax(curve))
    return {
        "box_threshold": float(thresholds[best]),
        "val_max_box_accuracy": float(curve[best]),
        "val_box_accuracy_curve": {str(t): float(a) for t, a in zip(thresholds, curve)},
    }


def train_one_epoch(net, optimizer, scheduler, data: PreparedData, recipe: Recipe, config: TrainConfig, epoch: int, device,
                    class_weights: torch.Tensor | None = None, rank: int = 0, world: int = 1) -> dict:
    """One pass over the training set; with several processes each takes every world-th image of a batch."""
    net.train()
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    order = torch.randperm(len(data.train_x), generator=generator)
    loss_sum, correct, seen = 0.0, 0, 0
    batches = range(0, len(order), config.batch_size)
    with tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, disable=None if rank == 0 else True, unit="batch") as bar:
        for start in bar:
            index = order[start : start + config.batch_size][rank::world]
            xb = augment(data.train_x[index], generator, recipe.hflip, recipe.shift).to(device)
            yb = data.train_y[index].to(device)
            logits, _ = net(xb)
            loss = F.cross_entropy(logits, yb, weight=class_weights)
            if not torch.isfinite(loss):
                raise Diverged(f"epoch {epoch + 1}, batch {start // config.batch_size + 1}: the training loss is {loss.item()}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(index)
            correct += (logits.argmax(1) == yb).sum().item()
            seen += len(index)
            bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.3f}", acc=f"{correct / max(seen, 1):.3f}")
    return {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1)}


def inverse_frequency_weights(labels: torch.Tensor, count: int) -> torch.Tensor:
    """N / (classes * n_c) per class: each class weighs the same in the loss, whatever its size."""
    counts = torch.bincount(labels, minlength=count).clamp(min=1).float()
    return len(labels) / (count * counts)


def resume(path: str | Path, log: Callable[[str], None] = print, **overrides) -> Path:
    """Continue the run saved in checkpoint `path`; `overrides` replace saved config fields (epochs, device, out, ...)."""
    state = load_checkpoint(path)
    if state.training is None:
        raise TrainError(f"{path}: checkpoint holds no training state to resume from")
    try:
        saved = replace(TrainConfig(**state.training["config"]), stop_after=None)
    except (KeyError, TypeError) as err:
        raise TrainError(f"{path}: checkpoint's training config is malformed ({first_line(err)})") from None
    if overrides.get("recipe", saved.recipe) != saved.recipe:
        raise TrainError(f"{path}: checkpoint is from recipe {saved.recipe!r}, not {overrides['recipe']!r}")
    log(f"resuming {path} after epoch {state.training['epoch']}")
    return fit(replace(saved, **overrides), log, state)


def fit(config: TrainConfig, log: Callable[[str], None] = print, state: Checkpoint | None = None) -> Path:
    """Train per `config`, or continue from a loaded checkpoint `state`; returns the best checkpoint path."""
    recipe = config.build_recipe()
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
    try:
        return _fit(config, recipe, device, rank, world, log, state)
    finally:
        if world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def _fit(config: TrainConfig, recipe: Recipe, device, rank: int, world: int, log, state: Checkpoint | None) -> Path:
    started = time.time()
    data = recipe.load(DataOptions(Path(config.data) if config.data else None, config.samples, config.seed))
    for note in data.notes:
        log(note)
    log(f"{recipe.name}: {len(data.train_x)} training and {len(data.val_x)} validation images "
        f"({time.time() - started:.1f}s to prepare), device {device}" + (f", {world} processes" if world > 1 else ""))

    torch.manual_seed(config.seed)
    init = BackboneInit() if state is not None else BackboneInit(config.pretrained, config.weights)
    model = GapCam(recipe.architecture, init).to(device)
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    optimizer = make_optimizer(model, recipe, config.lr)
    steps_per_epoch = math.ceil(len(data.train_x) / config.batch_size)
    schedule = warmup_cosine(config.epochs * steps_per_epoch, warmup_steps=max(1, steps_per_epoch // 2))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    class_weights = inverse_frequency_weights(data.train_y, len(recipe.labels)).to(device) if recipe.class_weighted else None
    if class_weights is not None:
        log("class weights (inverse frequency): " + ", ".join(f"{l} {w:.2f}" for l, w in zip(recipe.labels, class_weights.tolist())))
    start_epoch, history, best = 0, [], -1.0
    if state is not None:
        try:
            model.load_state_dict(state.model)
            optimizer.load_state_dict(state.training["optimizer"])
            scheduler.load_state_dict(state.training["scheduler"])
            torch.set_rng_state(state.training["rng"])
            start_epoch, history = int(state.training["epoch"]), list(state.training["history"])
            best = float(state.training["best_accuracy"])
        except (RuntimeError, ValueError, KeyError, TypeError) as err:
            raise TrainError(f"{config.out}: the checkpoint's training state does not fit this run ({first_line(err, STATE_DICT_DETAIL)})") from None

    out, last = Path(config.out), last_path(config.out)
    for epoch in range(start_epoch, config.epochs):
        tick = time.time()
        try:
            train_metrics = train_one_epoch(net, optimizer, scheduler, data, recipe, config, epoch, device, class_weights, rank, world)
            val_metrics = validation_metrics(model, data.val_x, data.val_y, device) if rank == 0 else {}
            if rank == 0 and not math.isfinite(val_metrics["loss"]):
                raise Diverged(f"epoch {epoch + 1}: the validation loss is {val_metrics['loss']}")
        except Diverged as err:
            saved = epoch > start_epoch or state is not None  # this run (or the one it resumes) wrote `last`
            kept = f"the last good checkpoint is {last}, after epoch {epoch}" if saved else "no epoch finished, so nothing was saved"
            raise TrainError(f"training diverged at {err}; stopped (try a lower --lr); {kept}") from None
        if rank == 0:
            history.append({
                "epoch": epoch + 1,
                "train_loss": train_metrics["loss"],
                "train_accuracy": train_metrics["accuracy"],
                "val_loss": val_metrics["loss"],
                "val_accuracy": val_metrics["accuracy"],
                "lr": scheduler.get_last_lr()[0],
                "seconds": time.time() - tick,
            })
            improved = val_metrics["accuracy"] > best
            best = max(best, val_metrics["accuracy"])
            checkpoint = run_checkpoint(
                config=config, recipe=recipe, data=data, model=model, optimizer=optimizer, scheduler=scheduler,
                history=history, best_accuracy=best, processes=world,
            )
            save_checkpoint(last, checkpoint)
            if improved:
                save_checkpoint(out, checkpoint)
            log(f"epoch {epoch + 1}/{config.epochs}  train loss {train_metrics['loss']:.4f} acc {train_metrics['accuracy']:.3f}  "
                f"val loss {val_metrics['loss']:.4f} acc {val_metrics['accuracy']:.3f}  "
                f"{time.time() - tick:.1f}s{'  (best, saved)' if improved else ''}")
        if config.stop_after is not None and epoch + 1 - start_epoch >= config.stop_after:
            log(f"stopped after {config.stop_after} epoch(s); continue with --resume {last}")
            break
    if rank == 0 and out.exists():
        report = calibrate_and_report(out, model, data, device, history, log)
        log(f"best validation accuracy {best:.3f}; wrote {out} (best), {last} (latest) and {', '.join(p.name for p in report)} "
            f"in {time.time() - started:.0f}s")
    return out


def calibrate_and_report(out: Path, model: GapCam, data: PreparedData, device, history: list[dict], log) -> list[Path]:
    """With the best weights: calibrate the CAM box threshold where there are boxes (stored in the best
    checkpoint), and write the validation metrics and plots beside the checkpoint.

    Calibration runs once, on the final best weights, rather than at every improvement: on the
    shapes demo it costs about 5 s, which every improved epoch would pay again.
    """
    best_checkpoint = load_checkpoint(out)
    model.load_state_dict(best_checkpoint.model)
    if data.val_boxes is not None:
        loc = calibrate_box_threshold(model, data.val_x, data.val_y, data.val_boxes, device)
        save_checkpoint(out, replace(best_checkpoint, localization=loc))
        log(f"CAM box threshold {loc['box_threshold']:.2f} (validation box accuracy {loc['val_max_box_accuracy']:.3f}; "
            f"{loc['val_box_accuracy_curve']['0.2']:.3f} at the paper's 0.2)")
    metrics = classification_metrics(data.val_y.numpy(), predict(model, data.val_x, device), best_checkpoint.labels)
    return write_report(out.with_suffix(""), "val", {**metrics, "checkpoint": str(out), "split": "val"}, history)
