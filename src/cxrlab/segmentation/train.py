"""Training loop for the lung segmenter: Dice + BCE with an ignore region, resumable."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cxrlab.core.augment import augment_pair
from cxrlab.core.checkpoint import fingerprint
from cxrlab.core.errors import ConfigError
from cxrlab.core.loop import Keep, TrainResult, fit, make_optimizer, model_signature, optimizer_step
from cxrlab.core.runtime import autocast, device, mean_over_processes, memory_format, shard
from cxrlab.core.transforms import to_tensor
from cxrlab.segmentation.config import SegTrainConfig
from cxrlab.segmentation.data import IGNORE
from cxrlab.segmentation.evaluate import dice_score
from cxrlab.segmentation.model import predict_logits

log = logging.getLogger(__name__)


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0, bce_weight: float = 1.0
) -> torch.Tensor:
    """Soft Dice (per image) plus BCE over the pixels outside the ignore region.

    Args:
        logits: (N, H, W) lung logits.
        target: (N, H, W) codes: 1 lung, 0 background, ``IGNORE`` left out.
        dice_weight: Weight of the Dice term.
        bce_weight: Weight of the BCE term.
    """
    valid = (target != IGNORE).float()
    lung = (target == 1).float()
    bce = F.binary_cross_entropy_with_logits(logits, lung, reduction="none")
    bce = (bce * valid).sum() / valid.sum().clamp_min(1)
    prob = logits.sigmoid() * valid
    inter = (prob * lung).sum((1, 2))
    dice = 1 - (2 * inter + 1) / (prob.sum((1, 2)) + lung.sum((1, 2)) + 1)
    return dice_weight * dice.mean() + bce_weight * bce


def train_segmenter(
    model: torch.nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    cfg: SegTrainConfig,
    checkpoint_path: str | Path | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place; on return it holds the weights of the best val Dice.

    Args:
        model: A freshly built segmenter.
        train: Prepared uint8 images and coded masks, each (N, S, S).
        val: The same for validation (picks the best epoch only).
        cfg: Optimisation settings.
        checkpoint_path: Saved after every epoch and resumed from; None disables.
        on_epoch: Called with each epoch's metrics.
    """
    if len(train[0]) == 0 or len(val[0]) == 0:
        raise ConfigError("the segmentation train and val splits must not be empty.")
    layout = memory_format(cfg.channels_last)
    model.to(device(), memory_format=layout)
    x_train = to_tensor(train[0], train[0].shape[-1])
    y_train = torch.as_tensor(train[1]).unsqueeze(1)
    steps_per_epoch = -(-len(x_train) // cfg.batch_size)
    optimizer, scheduler = make_optimizer(model, cfg.optim, cfg.epochs * steps_per_epoch)

    def train_epoch(epoch: int) -> float:
        return _train_epoch(model, x_train, y_train, cfg, epoch, optimizer, scheduler)

    def validate() -> dict[str, float]:
        logits = predict_logits(model, val[0])
        target = torch.as_tensor(val[1])
        loss = segmentation_loss(logits, target, cfg.dice_weight, cfg.bce_weight).item()
        dice = dice_score(logits.numpy() > 0, val[1])
        return {"val_loss": loss, "val_dice": float(dice.mean())}

    data_id = (len(x_train), int(train[0].sum()), int(train[1].sum()))
    run_id = fingerprint(asdict(cfg), model_signature(model), data_id)
    result = fit(
        model,
        optimizer=optimizer,
        scheduler=scheduler,
        epochs=cfg.epochs,
        run_id=run_id,
        train_epoch=train_epoch,
        validate=validate,
        keep=Keep.best("val_dice"),
        checkpoint=checkpoint_path,
        on_epoch=on_epoch,
        patience=cfg.patience,
    )
    model.to("cpu", memory_format=torch.contiguous_format)
    return result


def _train_epoch(model, x, y, cfg: SegTrainConfig, epoch: int, optimizer, scheduler) -> float:
    """One seeded pass over (x, y) in augmented, sharded batches; the mean loss."""
    model.train()
    layout = memory_format(cfg.channels_last)
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    order = torch.randperm(len(x), generator=gen)
    total, count = 0.0, 0
    for i in tqdm(range(0, len(order), cfg.batch_size), desc=f"epoch {epoch + 1}", leave=False):
        idx = order[i : i + cfg.batch_size]
        xb, yb = augment_pair(x[idx], y[idx], cfg.augment, gen)
        part = shard(len(idx))  # this process's share of the batch
        xb, yb = xb[part].to(device()), yb[part].to(device())
        with autocast():
            logits = model(xb.contiguous(memory_format=layout))[:, 0]
        loss = segmentation_loss(logits.float(), yb[:, 0], cfg.dice_weight, cfg.bce_weight)
        total += optimizer_step(loss, optimizer, scheduler, model.parameters()) * len(xb)
        count += len(xb)
    return mean_over_processes(total / count, count)
