"""The epoch loop every trainer shares: best-epoch selection, checkpoints and resume.

A trainer supplies one function that trains an epoch and one that validates; this
module keeps the history, the best weights, and a checkpoint after every epoch,
so an interrupted run resumes where it stopped. When each epoch's randomness is
seeded from (seed, epoch), a resumed run ends with the same weights as an
uninterrupted one.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from cxrlab.training.checkpoint import load_checkpoint, save_checkpoint
from cxrlab.training.distributed import is_main_process

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What training returns: the best model (already loaded) and its history."""

    best_epoch: int
    best_score: float
    history: list[dict[str, float]]
    seconds: float


def make_optimizer(model: torch.nn.Module, cfg: Any, steps_per_epoch: int):
    """AdamW or Nesterov SGD without decay on biases and norms, plus the LR schedule.

    ``cfg`` has ``optimizer``, ``lr``, ``weight_decay``, ``schedule`` (``onecycle``,
    ``cosine`` or ``constant``), ``warmup_frac`` and ``epochs``.
    """
    params = list(model.named_parameters())
    groups = [
        {"params": [p for _, p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
        {"params": [p for _, p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    if cfg.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr)
    else:
        optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg.lr, total_steps=total, pct_start=cfg.warmup_frac
        )
    elif cfg.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    return optimizer, scheduler


def model_signature(model: torch.nn.Module) -> list:
    """Parameter names and shapes: part of a run's fingerprint."""
    return [(name, list(p.shape)) for name, p in model.state_dict().items()]


def fit(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    epochs: int,
    run_id: str,
    train_epoch: Callable[[int], float],
    validate: Callable[[], dict[str, float]],
    select: str,
    checkpoint_path: str | Path | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Run ``epochs`` epochs; on return ``model`` holds the weights of the best one.

    Args:
        model: The model being trained.
        optimizer: Its optimizer (saved in checkpoints).
        scheduler: Its LR scheduler (saved in checkpoints).
        epochs: Total epochs, counting those done before a resume.
        run_id: Fingerprint of config and data; a checkpoint with another is ignored.
        train_epoch: Trains epoch ``i`` (0-based) and returns its mean loss.
        validate: Returns validation metrics (keys start with ``val_``).
        select: The ``validate`` key to maximise; ``val_loss`` is minimised.
        checkpoint_path: Saved after every epoch and resumed from; deleted at the
            end. None disables checkpointing.
        on_epoch: Called with each epoch's row (also the replayed rows on resume).

    Returns:
        The best epoch (1-based), its score, the history and the seconds taken.
    """
    state = load_checkpoint(checkpoint_path, run_id) if checkpoint_path else None
    start_epoch, history = 0, []
    best: dict[str, Any] = {"epoch": -1, "score": -float("inf"), "weights": None}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, history = state["epoch"] + 1, state["history"]
        best = {"epoch": state["best_epoch"], "score": state["best_score"]}
        best["weights"] = state["best"]
        log.info("resuming from %s at epoch %d", checkpoint_path, start_epoch + 1)
        for row in history:
            if on_epoch:
                on_epoch(row)

    start = time.perf_counter()
    bar = tqdm(range(start_epoch, epochs), desc="epochs", initial=start_epoch, total=epochs)
    for epoch in bar:
        train_loss = train_epoch(epoch)
        row = {"epoch": epoch + 1, "train_loss": train_loss, "lr": scheduler.get_last_lr()[0]}
        row.update(validate())
        score = -row[select] if select == "val_loss" else row[select]
        if score > best["score"]:
            weights = copy.deepcopy(model.state_dict())
            best = {"epoch": epoch + 1, "score": score, "weights": weights}
        history.append(row)
        bar.set_postfix(loss=f"{train_loss:.3f}", **{select: f"{row[select]:.4f}"})
        if checkpoint_path and is_main_process():  # every process resumes from it
            save_checkpoint(
                checkpoint_path,
                {
                    "fingerprint": run_id,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "history": history,
                    "best_epoch": best["epoch"],
                    "best_score": best["score"],
                    "best": best["weights"],
                },
            )
        if on_epoch:
            on_epoch(row)
    seconds = time.perf_counter() - start
    model.load_state_dict(best["weights"])
    if checkpoint_path and is_main_process():
        Path(checkpoint_path).unlink(missing_ok=True)
    log.info("best epoch %d (%s %.4f), %.1f s", best["epoch"], select, best["score"], seconds)
    return TrainResult(best["epoch"], float(best["score"]), history, seconds)
