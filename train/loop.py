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
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import runtime
from runtime.cam import box_accuracy_curve, normalize_maps
from train.checkpoint import load_checkpoint, save_checkpoint
from train.data import Splits, augment
from train.errors import TrainError
from train.evaluate import classification_metrics, logits_of, predict, write_report
from train.models import BackboneInit, GapCam
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


def evaluate(model: GapCam, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> dict:
    """Loss and accuracy of `model` on a preprocessed set."""
    logits, count = logits_of(model, x, device), max(1, len(x))
    return {"loss": F.cross_entropy(logits, y, reduction="sum").item() / count, "accuracy": (logits.argmax(1) == y).sum().item() / count}


BOX_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95


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
    curve = box_accuracy_curve(np.concatenate(cams), boxes, BOX_THRESHOLDS)
    best = int(np.argmax(curve))
    return {
        "box_threshold": BOX_THRESHOLDS[best],
        "val_max_box_accuracy": float(curve[best]),
        "val_box_accuracy_curve": {str(t): float(a) for t, a in zip(BOX_THRESHOLDS, curve)},
    }


def train_one_epoch(net, optimizer, scheduler, splits: Splits, recipe: Recipe, config: TrainConfig, epoch: int, device,
                    class_weights: torch.Tensor | None = None, rank: int = 0, world: int = 1) -> dict:
    """One pass over the training set; with several processes each takes every world-th image of a batch."""
    net.train()
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
    order = torch.randperm(len(splits.train_x), generator=generator)
    loss_sum, correct, seen = 0.0, 0, 0
    batches = range(0, len(order), config.batch_size)
    with tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, disable=None if rank == 0 else True, unit="batch") as bar:
        for start in bar:
            index = order[start : start + config.batch_size][rank::world]
            xb = augment(splits.train_x[index], generator, recipe.hflip, recipe.shift).to(device)
            yb = splits.train_y[index].to(device)
            logits, _ = net(xb)
            loss = F.cross_entropy(logits, yb, weight=class_weights)
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
    if "training" not in state:
        raise TrainError(f"{path}: checkpoint holds no training state to resume from")
    saved = replace(TrainConfig(**state["training"]["config"]), stop_after=None)
    if overrides.get("recipe", saved.recipe) != saved.recipe:
        raise TrainError(f"{path}: checkpoint is from recipe {saved.recipe!r}, not {overrides['recipe']!r}")
    log(f"resuming {path} after epoch {state['training']['epoch']}")
    return fit(replace(saved, **overrides), log, state)


def fit(config: TrainConfig, log: Callable[[str], None] = print, state: dict | None = None) -> Path:
    """Train per `config`, or continue from a loaded checkpoint `state`; returns the best checkpoint path."""
    recipe = config.build_recipe()
    config = config.resolved(recipe)
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


def _fit(config: TrainConfig, recipe: Recipe, device, rank: int, world: int, log, state: dict | None) -> Path:
    started = time.time()
    splits = recipe.load(DataOptions(Path(config.data) if config.data else None, config.samples, config.seed))
    for note in splits.notes:
        log(note)
    log(f"{recipe.name}: {len(splits.train_x)} training and {len(splits.val_x)} validation images "
        f"({time.time() - started:.1f}s to prepare), device {device}" + (f", {world} processes" if world > 1 else ""))

    torch.manual_seed(config.seed)
    init = BackboneInit() if state is not None else BackboneInit(config.pretrained, config.weights)
    model = GapCam(recipe.architecture, init).to(device)
    net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if world > 1 else model
    optimizer = make_optimizer(model, recipe, config.lr)
    steps_per_epoch = math.ceil(len(splits.train_x) / config.batch_size)
    schedule = warmup_cosine(config.epochs * steps_per_epoch, warmup_steps=max(1, steps_per_epoch // 2))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    class_weights = inverse_frequency_weights(splits.train_y, len(recipe.labels)).to(device) if recipe.class_weighted else None
    if class_weights is not None:
        log("class weights (inverse frequency): " + ", ".join(f"{l} {w:.2f}" for l, w in zip(recipe.labels, class_weights.tolist())))
    start_epoch, history, best = 0, [], -1.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["training"]["optimizer"])
        scheduler.load_state_dict(state["training"]["scheduler"])
        torch.set_rng_state(state["training"]["rng"])
        start_epoch, history = state["training"]["epoch"], state["training"]["history"]
        best = state["training"]["best_accuracy"]

    out, last = Path(config.out), last_path(config.out)
    for epoch in range(start_epoch, config.epochs):
        tick = time.time()
        train_metrics = train_one_epoch(net, optimizer, scheduler, splits, recipe, config, epoch, device, class_weights, rank, world)
        if rank == 0:
            val_metrics = evaluate(model, splits.val_x, splits.val_y, device)
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
            checkpoint = make_checkpoint(config, recipe, splits, model, optimizer, scheduler, history, best, epoch + 1, world)
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
        report = finish(out, model, splits, device, history, log)
        log(f"best validation accuracy {best:.3f}; wrote {out} (best), {last} (latest) and {', '.join(p.name for p in report)} "
            f"in {time.time() - started:.0f}s")
    return out


def make_checkpoint(config, recipe, splits, model, optimizer, scheduler, history, best, epoch, world) -> dict:
    """Contract 1: everything needed to export, evaluate and resume the run after `epoch` epochs."""
    return {
        "architecture": recipe.architecture.to_dict(),
        "labels": list(recipe.labels),
        "preprocess": recipe.preprocess.to_dict(),
        "provenance": {
            "recipe": recipe.name,
            "data_fingerprint": splits.fingerprint,
            "images": {"train": len(splits.train_x), "val": len(splits.val_x)},
            "epochs": epoch,
            "seed": config.seed,
            "metrics": {"val_accuracy": history[-1]["val_accuracy"], "val_loss": history[-1]["val_loss"]},
            "notes": splits.notes,
            "processes": world,
            "init": "imagenet" if config.pretrained else ("weights file" if config.weights else "random"),
            "gapcam_version": runtime.__version__,
            "torch_version": str(torch.__version__),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "samples": splits.samples,
        "training": {
            "epoch": epoch,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "history": history,
            "best_accuracy": best,
            "config": asdict(config),
        },
    }


def finish(out: Path, model: GapCam, splits: Splits, device, history: list[dict], log) -> list[Path]:
    """With the best weights: calibrate the CAM box threshold where there are boxes, and write the
    validation metrics and plots beside the checkpoint."""
    best_checkpoint = load_checkpoint(out)
    model.load_state_dict(best_checkpoint["model"])
    if splits.val_boxes is not None:
        best_checkpoint["localization"] = calibrate_box_threshold(model, splits.val_x, splits.val_y, splits.val_boxes, device)
        save_checkpoint(out, best_checkpoint)
        loc = best_checkpoint["localization"]
        log(f"CAM box threshold {loc['box_threshold']:.2f} (validation box accuracy {loc['val_max_box_accuracy']:.3f}; "
            f"{loc['val_box_accuracy_curve']['0.2']:.3f} at the paper's 0.2)")
    metrics = classification_metrics(splits.val_y.numpy(), predict(model, splits.val_x, device), best_checkpoint["labels"])
    return write_report(out.with_suffix(""), "val", {**metrics, "checkpoint": str(out), "split": "val"}, history)
