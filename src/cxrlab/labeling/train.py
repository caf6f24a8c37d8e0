"""Contrastive training of a small CLIP on image-caption pairs (cpu profile).

Captions are built from the training split's labels with per-class templates. With
two classes, most captions in a batch describe the same class as several images, so
the loss treats every same-class pair as a positive (a label-aware InfoNCE) instead
of pretending that only the diagonal matches.
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

from cxrlab.core.augment import augment_batch
from cxrlab.core.checkpoint import fingerprint
from cxrlab.core.errors import ConfigError
from cxrlab.core.loop import (
    KEEP_LAST,
    TrainResult,
    fit,
    make_optimizer,
    model_signature,
    optimizer_step,
)
from cxrlab.core.runtime import autocast, device, mean_over_processes, memory_format, shard
from cxrlab.labeling.config import ClipTrainConfig
from cxrlab.labeling.model import ClipBundle

log = logging.getLogger(__name__)


def label_aware_clip_loss(
    image_emb: torch.Tensor, text_emb: torch.Tensor, labels: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE where all same-label image-text pairs are positives.

    Args:
        image_emb: L2-normalised image embeddings (B, D).
        text_emb: L2-normalised embeddings of each image's caption (B, D).
        labels: Class of each pair (B,).
        logit_scale: Inverse temperature.

    Returns:
        The mean of the image-to-text and text-to-image cross-entropies against
        targets spread evenly over each row's positives. With all labels distinct it
        equals the standard CLIP loss.
    """
    logits = logit_scale * image_emb @ text_emb.T
    same = (labels[:, None] == labels[None, :]).float()
    targets = same / same.sum(1, keepdim=True)
    loss_i = -(targets * F.log_softmax(logits, 1)).sum(1).mean()
    loss_t = -(targets * F.log_softmax(logits.T, 1)).sum(1).mean()
    return (loss_i + loss_t) / 2


def train_clip(
    bundle: ClipBundle,
    x: torch.Tensor,
    labels: np.ndarray,
    class_names: list[str],
    cfg: ClipTrainConfig,
    checkpoint: str | Path | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    captions: dict[str, list[str]] | None = None,
) -> TrainResult:
    """Train ``bundle.model`` in place on preprocessed images ``x`` and their labels.

    Each image is paired with one of its class's captions, ``captions`` or else
    ``cfg.captions``. With one class per distinct caption (:func:`caption_classes`) this is
    plain image-caption training, where images sharing a caption are positives.

    Runs on :func:`~cxrlab.core.loop.fit`: a checkpoint after every epoch, an exact
    resume, and the last epoch kept (there is no val set to choose by: the labels are
    calibrated on val afterwards). Rows: ``train_loss``, ``lr``, ``train_logit_scale``.
    """
    by_name = cfg.captions if captions is None else captions
    missing = [c for c in class_names if not by_name.get(c)]
    if missing:
        raise ConfigError(f"clip.train.captions has no caption for class '{missing[0]}'.")
    model = bundle.model
    model.to(device(), memory_format=memory_format(cfg.channels_last))
    # Every caption tokenised once; each step encodes the distinct captions and indexes them.
    captions = [(c, t) for c in class_names for t in by_name[c]]
    tokens = bundle.tokenizer([t for _, t in captions]).to(device())
    caption_class = torch.tensor([class_names.index(c) for c, _ in captions])
    by_class = [torch.nonzero(caption_class == k)[:, 0] for k in range(len(class_names))]
    y = torch.as_tensor(labels)
    steps_per_epoch = -(-len(y) // cfg.batch_size)
    optimizer, scheduler = make_optimizer(model, cfg.optim, cfg.epochs * steps_per_epoch)

    def train_epoch(epoch: int) -> float:
        batches = (tokens, by_class, optimizer, scheduler)
        return _train_epoch(model, x, y, cfg, epoch, *batches)

    run_id = fingerprint(asdict(cfg), model_signature(model), tuple(x.shape), int(y.sum()))
    result = fit(
        model, optimizer=optimizer, scheduler=scheduler, epochs=cfg.epochs, run_id=run_id,
        train_epoch=train_epoch,
        validate=lambda: {"train_logit_scale": model.logit_scale.exp().item()},
        keep=KEEP_LAST, checkpoint=checkpoint, on_epoch=on_epoch,
    )  # fmt: skip
    model.to("cpu", memory_format=torch.contiguous_format)
    return result


def caption_classes(texts: list[str]) -> tuple[np.ndarray, list[str], dict[str, list[str]]]:
    """Image captions as classes for :func:`train_clip`: one class per distinct caption.

    Returns:
        Each image's class, the class names (the distinct captions, sorted) and the
        captions of each class (itself).
    """
    names = sorted(set(texts))
    index = {text: i for i, text in enumerate(names)}
    return np.array([index[t] for t in texts]), names, {t: [t] for t in names}


def _train_epoch(model, x, y, cfg: ClipTrainConfig, epoch, tokens, by_class, optimizer, scheduler):
    """One seeded pass: each image with a caption of its class, drawn from ``by_class``."""
    model.train()
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    order = torch.randperm(len(y), generator=gen)
    total, count = 0.0, 0
    for i in tqdm(range(0, len(y), cfg.batch_size), desc=f"epoch {epoch + 1}", leave=False):
        idx = order[i : i + cfg.batch_size]
        pick = torch.stack([by_class[k][torch.randint(len(by_class[k]), (1,), generator=gen)][0]
                            for k in y[idx].tolist()])  # fmt: skip
        part = shard(len(idx))  # this process's share of the batch
        xb = augment_batch(x[idx], cfg.augment, gen)[part].to(device())
        xb = xb.contiguous(memory_format=memory_format(cfg.channels_last))
        with autocast():
            image = model.encode_image(xb, normalize=True)
            text = model.encode_text(tokens, normalize=True)
        loss = label_aware_clip_loss(
            image.float(),
            text.float()[pick[part].to(device())],
            y[idx][part].to(device()),
            model.logit_scale.exp(),
        )
        total += optimizer_step(loss, optimizer, scheduler, model.parameters()) * len(xb)
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100))
        count += len(xb)
    return mean_over_processes(total / count, count)
