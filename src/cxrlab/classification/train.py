"""Training loop for the PneumoniaMNIST classifier, with per-epoch checkpoints and resume.

Each epoch's shuffling, augmentation and dropout are seeded from (seed, epoch), so
an interrupted run that resumes from its last checkpoint ends with the same
weights as one that was never interrupted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cxrlab.classification.config import TrainConfig
from cxrlab.classification.data import Split
from cxrlab.classification.evaluate import binary_metrics
from cxrlab.classification.model import Classifier, predict_proba
from cxrlab.core.augment import augment_batch
from cxrlab.core.checkpoint import fingerprint
from cxrlab.core.loop import Keep, TrainResult, fit, make_optimizer, model_signature, optimizer_step
from cxrlab.core.runtime import (
    accelerator,
    autocast,
    device,
    mean_over_processes,
    memory_format,
    shard,
)
from cxrlab.core.transforms import to_tensor

log = logging.getLogger(__name__)


def train_classifier(
    model: Classifier,
    train: Split,
    val: Split,
    cfg: TrainConfig,
    checkpoint_path: str | Path | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train ``model`` in place; on return it holds the weights of the best epoch.

    Args:
        model: A freshly built classifier.
        train: Training images and labels.
        val: Validation split, used only to pick the best epoch.
        cfg: Optimisation settings.
        checkpoint_path: Where to save the state after every epoch and resume from;
            None disables checkpointing. Deleted after a successful run.
        on_epoch: Called with each epoch's metrics (train loss, val loss, val AUC ...).

    Returns:
        The best epoch, its validation score, the per-epoch history and the time taken.
    """
    layout = memory_format(cfg.channels_last)
    model.to(device(), memory_format=layout)
    x_train = to_tensor(train.images, cfg.image_size).contiguous(memory_format=layout)
    y_train = torch.as_tensor(train.labels)
    x_val = to_tensor(val.images, cfg.image_size).contiguous(memory_format=layout)

    steps_per_epoch = -(-len(y_train) // cfg.batch_size)
    optimizer, scheduler = make_optimizer(model, cfg.optim, cfg.epochs * steps_per_epoch)
    trained = accelerator().prepare_model(model)  # DDP under several processes
    weight = _class_weights(train.labels) if cfg.class_weighting == "balanced" else None
    weight = weight.to(device()) if weight is not None else None

    run_id = fingerprint(asdict(cfg), model_signature(model), len(train), int(train.images.sum()))
    result = fit(
        model,
        optimizer=optimizer,
        scheduler=scheduler,
        epochs=cfg.epochs,
        run_id=run_id,
        train_epoch=lambda epoch: _train_epoch(
            trained, x_train, y_train, cfg, epoch, optimizer, scheduler, weight
        ),
        validate=lambda: _validate(model, x_val, val.labels),
        keep=Keep.best(f"val_{cfg.select_metric}"),
        checkpoint=checkpoint_path,
        on_epoch=on_epoch,
    )
    model.to("cpu", memory_format=torch.contiguous_format)
    return result


def _train_epoch(model, x, y, cfg: TrainConfig, epoch, optimizer, scheduler, weight) -> float:
    model.train()
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    torch.manual_seed(cfg.seed * 100_003 + epoch)  # dropout
    order = torch.randperm(len(y), generator=gen)
    total, count = 0.0, 0
    batches = range(0, len(y), cfg.batch_size)
    for i in tqdm(batches, desc=f"epoch {epoch + 1}", leave=False):
        idx = order[i : i + cfg.batch_size]
        # The whole batch is augmented in every process, so the random draws match
        # a single process; each process then trains on its share.
        part = shard(len(idx))
        xb = augment_batch(x[idx], cfg.augment, gen)[part].to(device())
        with autocast():
            logits = model(xb)
        loss = F.cross_entropy(
            logits.float(), y[idx][part].to(device()), weight=weight,
            label_smoothing=cfg.label_smoothing,
        )  # fmt: skip
        total += optimizer_step(loss, optimizer, scheduler) * len(xb)  # DDP syncs the grads
        count += len(xb)
    return mean_over_processes(total / count, count)


def _validate(model: Classifier, x_val: torch.Tensor, labels: np.ndarray) -> dict[str, float]:
    prob = predict_proba(model, x_val).numpy()
    eps = 1e-7
    p = np.clip(prob, eps, 1 - eps)
    loss = float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
    m = binary_metrics(labels, prob, 0.5)
    return {
        "val_loss": loss,
        "val_auc": m["auc"],
        "val_accuracy": m["accuracy"],
        "val_balanced_accuracy": m["balanced_accuracy"],
    }


def _class_weights(labels: np.ndarray) -> torch.Tensor:
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    return torch.tensor(len(labels) / (2 * np.maximum(counts, 1)), dtype=torch.float32)
