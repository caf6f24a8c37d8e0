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
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from cxrlab.core.checkpoint import load_checkpoint, save_checkpoint
from cxrlab.core.config import OptimConfig
from cxrlab.core.errors import TrainingDiverged
from cxrlab.core.runtime import grad_scaler, is_main_process, sync_gradients

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What training returns: the best model (already loaded) and its history."""

    best_epoch: int
    best_score: float
    history: list[dict[str, float]]
    seconds: float
    record: dict[str, Any] = field(default_factory=dict)  # trainer facts saved with the model


def make_optimizer(
    model: torch.nn.Module,
    cfg: OptimConfig,
    total_steps: int,
    scaled: Collection[str] = (),
    scale: float = 1.0,
):
    """AdamW or Nesterov SGD without decay on biases and norms, plus the LR schedule.

    The schedule (``cfg.schedule``) spans ``total_steps``: ``onecycle``, or a linear
    warm-up over ``cfg.warmup_frac`` of the steps, then decay to 0 (``cosine``,
    ``linear``) or a constant LR (see :func:`lr_factor`). Only weights that require a
    gradient are optimised; those named in ``scaled`` (pretrained ones, say) at ``scale``
    times the LR.
    """
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((p.ndim > 1, name in scaled), []).append(p)
    param_groups = [
        {
            "params": params,
            "weight_decay": cfg.weight_decay if decay else 0.0,
            "lr": cfg.lr * (scale if old else 1.0),
        }
        # Full-LR groups first: fit logs group 0's LR. Decayed weights before the rest.
        for (decay, old), params in sorted(groups.items(), key=lambda g: (g[0][1], not g[0][0]))
    ]
    if cfg.optimizer == "adamw":
        optimizer = torch.optim.AdamW(param_groups, lr=cfg.lr)
    else:
        optimizer = torch.optim.SGD(param_groups, lr=cfg.lr, momentum=0.9, nesterov=True)
    if cfg.schedule == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in param_groups], total_steps=total_steps,
            pct_start=cfg.warmup_frac,
        )  # fmt: skip
    else:
        factor = partial(
            lr_factor,
            warmup=round(cfg.warmup_frac * total_steps),
            total=total_steps,
            shape=cfg.schedule,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return optimizer, scheduler


def optimizer_step(loss, optimizer, scheduler, params=None, max_grad_norm: float = 0.0) -> float:
    """One update from a batch's ``loss``, the same in every trainer; returns its value.

    Zero the gradients, backward, average the gradients of ``params`` over the processes
    (None: the model is DDP-wrapped, which already did), clip their global norm to
    ``max_grad_norm`` (0: no clipping), then step the optimizer and the LR schedule.
    """
    scaler = grad_scaler()  # fp16 only: scale the loss so small gradients survive
    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler else loss).backward()
    if params is not None:
        params = list(params)
        sync_gradients(params)
        if max_grad_norm > 0:
            if scaler:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if scaler:
        scaler.step(optimizer)  # skips the step if a gradient overflowed
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    return loss.item()


def lr_factor(step: int, warmup: int, total: int, shape: str) -> float:
    """The LR multiplier at ``step``: linear warm-up over ``warmup`` steps, then ``shape``.

    ``constant`` stays at 1, ``cosine`` and ``linear`` decay to 0 at ``total``. The first
    step already trains (at ``1 / warmup`` of the peak), unlike schedules that spend it at
    zero.
    """
    if step < warmup:
        return (step + 1) / warmup
    if shape == "constant":
        return 1.0
    if shape == "linear":
        return max(0.0, (total - step) / max(1, total - warmup))
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class DivergenceGuard:
    """Stops a run whose ``key`` turned non-finite or stayed far above its best.

    Call it with each epoch's (or block's) row, for example from ``fit``'s ``on_epoch``.
    It raises :class:`TrainingDiverged` when ``row[key]`` is NaN or infinite, or when it
    has been more than ``factor`` times its best value for ``patience`` rows in a row.

    Args:
        key: The row's loss to watch (``val_loss``: its noise is fixed, so rows compare).
        factor: How far above the best counts as a rise.
        patience: How many rows in a row the rise must last.
        what: Names the run in the message (``lora``).
        hint: What to change, appended to the message.
        steps_per_row: Optimizer steps per row, to name the step in the message.
    """

    def __init__(
        self, key: str, factor: float, patience: int, what: str, hint: str, steps_per_row: int
    ) -> None:
        self.key, self.factor, self.patience = key, factor, patience
        self.what, self.hint, self.steps_per_row = what, hint, steps_per_row
        self.best = (math.inf, 0)
        self.above = 0

    def start_from(self, value: float) -> None:
        """Count ``value`` (the untrained model's, at step 0) as the best so far."""
        self.best = (value, 0)

    def __call__(self, row: dict[str, float]) -> None:
        """Check one row; raise :class:`TrainingDiverged` if the run ran away."""
        value, step = row[self.key], int(row["epoch"]) * self.steps_per_row
        if not math.isfinite(value) or not math.isfinite(row.get("train_loss", 0.0)):
            self._stop(f"{self.key} became {value} (train loss {row.get('train_loss')})", step)
        if value < self.best[0]:
            self.best, self.above = (value, step), 0
        elif value > self.factor * self.best[0]:
            self.above += 1
            if self.above >= self.patience:
                self._stop(
                    f"{self.key} {value:.4g} stayed above {self.factor:g}x its best "
                    f"{self.best[0]:.4g} (step {self.best[1]}) for {self.above} evaluations",
                    step,
                )
        else:
            self.above = 0

    def _stop(self, why: str, step: int) -> None:
        raise TrainingDiverged(f"{self.what} training diverged at step {step}: {why}; {self.hint}")


def trainable_weights(model: torch.nn.Module) -> torch.nn.Module:
    """The parameters of ``model`` that train, as one module.

    Hand it to :func:`fit` for an adapter (LoRA) on a frozen base: fit then keeps and
    checkpoints only the adapter, not a copy of the base (3.4 GB for SD-1.5's UNet, a
    second LLaVA-8B), and :func:`make_optimizer` groups only these.
    """
    return torch.nn.ParameterList([p for p in model.parameters() if p.requires_grad])


def model_signature(model: torch.nn.Module) -> list:
    """Parameter names and shapes: part of a run's fingerprint."""
    return [(name, list(p.shape)) for name, p in model.state_dict().items()]


@dataclass(frozen=True)
class Keep:
    """Which epoch's weights :func:`fit` keeps: the best by one row key, or the last.

    Build one with :meth:`best` (``Keep.best("val_auc")``) or use :data:`KEEP_LAST`.
    """

    key: str
    lower_is_better: bool = False

    @classmethod
    def best(cls, key: str) -> Keep:
        """The epoch with the best ``key``: the lowest for a loss, the highest otherwise."""
        return cls(key, lower_is_better=key.endswith("loss"))

    def score(self, row: dict[str, float]) -> float:
        """The row's score, higher is better."""
        return -row[self.key] if self.lower_is_better else row[self.key]


KEEP_LAST = Keep("epoch")  # the epoch number only grows: the last epoch is kept


def fit(
    model: torch.nn.Module,
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    epochs: int,
    run_id: str,
    train_epoch: Callable[[int], float],
    validate: Callable[[], dict[str, float]],
    keep: Keep,
    checkpoint: str | Path | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    patience: int | None = None,
) -> TrainResult:
    """Run ``epochs`` epochs; on return ``model`` holds the weights of the kept one.

    Args:
        model: The model being trained.
        optimizer: Its optimizer (saved in checkpoints).
        scheduler: Its LR scheduler (saved in checkpoints).
        epochs: Total epochs, counting those done before a resume.
        run_id: Fingerprint of config and data; a checkpoint with another is ignored.
        train_epoch: Trains epoch ``i`` (0-based) and returns its mean loss.
        validate: Returns validation metrics (keys start with ``val_``).
        keep: Which epoch's weights to keep (:class:`Keep`).
        checkpoint: Saved after every epoch, resumed from, deleted at the end (None: never).
        on_epoch: Called with each epoch's row (also the replayed rows on resume).
        patience: Stop once this many epochs in a row have not beaten the kept one (None:
            never). The LR schedule still spans ``epochs``, as in a run without a stop.

    Returns:
        The kept epoch (1-based), its ``keep.key`` value, the history and the seconds.
    """
    parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
    start_epoch, history, best = _resume(parts, checkpoint, run_id, on_epoch)
    start = time.perf_counter()
    bar = tqdm(range(start_epoch, epochs), desc="epochs", initial=start_epoch, total=epochs)
    for epoch in bar:
        train_loss = train_epoch(epoch)
        row = {"epoch": epoch + 1, "train_loss": train_loss, "lr": scheduler.get_last_lr()[0]}
        row.update(validate())
        if keep.score(row) > best["score"]:
            weights = copy.deepcopy(model.state_dict())
            best = {"epoch": epoch + 1, "score": keep.score(row), "weights": weights}
        history.append(row)
        bar.set_postfix(loss=f"{train_loss:.3f}", **{keep.key: f"{row[keep.key]:.4f}"})
        if checkpoint and is_main_process():  # every process resumes from it
            _save(checkpoint, parts, run_id, epoch, history, best)
        if on_epoch:
            on_epoch(row)
        if patience and epoch + 1 - best["epoch"] >= patience:
            log.info("stopping early: no better %s for %d epochs", keep.key, patience)
            break
    seconds = time.perf_counter() - start
    model.load_state_dict(best["weights"])
    if checkpoint and is_main_process():
        Path(checkpoint).unlink(missing_ok=True)
    value = history[best["epoch"] - 1][keep.key]
    log.info("kept epoch %d (%s %.4f), %.1f s", best["epoch"], keep.key, value, seconds)
    return TrainResult(best["epoch"], float(value), history, seconds)


def _save(checkpoint, parts: dict, run_id: str, epoch: int, history: list, best: dict) -> None:
    """Checkpoint the run after ``epoch`` (0-based): its parts, history and kept weights."""
    state = {k: v.state_dict() for k, v in parts.items()}
    state |= {"fingerprint": run_id, "epoch": epoch, "history": history}
    state |= {"best_epoch": best["epoch"], "best_score": best["score"]}
    save_checkpoint(checkpoint, state | {"best": best["weights"]})


def _resume(parts: dict, checkpoint, run_id: str, on_epoch) -> tuple[int, list, dict]:
    """Load a matching checkpoint into ``parts``: the next epoch, the history, the best."""
    state = load_checkpoint(checkpoint, run_id) if checkpoint else None
    if state is None:
        return 0, [], {"epoch": -1, "score": -float("inf"), "weights": None}
    for name, part in parts.items():
        part.load_state_dict(state[name])
    log.info("resuming from %s at epoch %d", checkpoint, state["epoch"] + 2)
    for row in state["history"]:
        if on_epoch:
            on_epoch(row)
    best = {"epoch": state["best_epoch"], "score": state["best_score"], "weights": state["best"]}
    return state["epoch"] + 1, state["history"], best
