"""Caption fine-tuning through the shared loop.

Cross-entropy on the caption tokens (padding at -100), AdamW with linear warmup and
linear decay, full fine-tune or LoRA.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from cxrlab.captioning.config import CaptionTrainConfig
from cxrlab.captioning.evaluate import CaptionScorer, grounding
from cxrlab.captioning.model import (
    Captioner,
    add_lora,
    caption_forward,
    caption_loss,
    generate_captions,
    is_quantized,
    pixel_values,
    pretrained_weights,
    sentence_embeddings,
)
from cxrlab.core.augment import augment_batch
from cxrlab.core.checkpoint import fingerprint
from cxrlab.core.loop import (
    Keep,
    TrainResult,
    fit,
    make_optimizer,
    model_signature,
    optimizer_step,
    trainable_weights,
)
from cxrlab.core.runtime import autocast, device, mean_over_processes, shard

log = logging.getLogger(__name__)


def _trainable(model: torch.nn.Module, cfg: CaptionTrainConfig, images: int) -> list:
    """The weights that train, logged with their share of the model."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    millions = [sum(p.numel() for p in ps) / 1e6 for ps in (trainable, model.parameters())]
    log.info("captioner: %s fine-tune, %.2fM of %.2fM weights trainable, %d images, %d epochs",
             cfg.finetune, *millions, images, cfg.epochs)  # fmt: skip
    return trainable


def train_captioner(
    captioner: Captioner,
    train: tuple[np.ndarray, list[str]],
    val: tuple[np.ndarray, list[str]],
    cfg: CaptionTrainConfig,
    checkpoint_path: str | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Fine-tune on (images, captions); keep the best epoch by ``cfg.select``.

    Args:
        captioner: Trained in place (wrapped in LoRA first when ``cfg.finetune`` is lora).
        train: uint8 images (N, H, W) and their captions.
        val: The same for validation.
        cfg: The fine-tune's params.
        checkpoint_path: Saved every epoch, resumed from.
        on_epoch: Called with each epoch's metrics.
    """
    pretrained = _prepare(captioner, cfg)
    model = captioner.model
    quantized = is_quantized(model)  # placed on the GPU when loaded; .to() is refused
    x_train, texts = pixel_values(captioner, train[0]), list(train[1])
    targets = sentence_embeddings(texts) if cfg.align_weight else None
    if targets is not None:  # a head from the image features to the sentence embeddings
        width = caption_forward(captioner, x_train[:1], texts[:1])[1].shape[-1]
        model.align_head = torch.nn.Linear(width, targets.shape[1])
        targets = targets.to(device())
    x_val, val_texts = pixel_values(captioner, val[0]), list(val[1])
    if not quantized:
        model.to(device())
    trainable = _trainable(model, cfg, len(texts))
    steps = cfg.epochs * -(-len(texts) // cfg.batch_size)
    optimizer, scheduler = make_optimizer(
        model, cfg.optim, steps, pretrained, cfg.pretrained_lr_scale
    )
    # fit keeps and checkpoints of a LoRA fine-tune only the adapter, not the frozen base
    weights = model if cfg.finetune == "full" else trainable_weights(model)
    run_id = fingerprint(cfg, captioner.cfg, texts, model_signature(weights))
    data, scorer = (x_train, texts, targets), CaptionScorer(meteor=False)
    result = fit(
        weights,
        optimizer=optimizer,
        scheduler=scheduler,
        epochs=cfg.epochs,
        run_id=run_id,
        train_epoch=lambda e: _train_epoch(
            captioner, data, cfg, e, optimizer, scheduler, trainable
        ),
        validate=lambda: _validate(
            captioner, x_val, val_texts, scorer if _captions_due(scheduler, cfg, steps) else None
        ),
        keep=Keep.best(cfg.select),
        checkpoint=checkpoint_path,
        on_epoch=on_epoch,
    )
    if targets is not None:
        del model.align_head
    if not quantized:
        model.to("cpu")
    return result


def _prepare(captioner: Captioner, cfg: CaptionTrainConfig) -> set[str]:
    """Gradient checkpointing and the LoRA, as ``cfg`` asks; the pretrained weights' names."""
    pretrained = pretrained_weights(captioner)
    if cfg.gradient_checkpointing:
        captioner.model.gradient_checkpointing_enable({"use_reentrant": False})
    if cfg.finetune == "lora":
        add_lora(captioner, cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets,
                 cfg.lora_modules_to_save)  # fmt: skip
    elif not is_quantized(captioner.model):  # trained in full: a half token table too
        captioner.model.get_input_embeddings().float()
    return pretrained


def _train_epoch(captioner, data, cfg: CaptionTrainConfig, epoch, optimizer, scheduler, trainable):
    """One seeded pass over ``data`` (images, captions, alignment targets or None)."""
    x_train, texts, targets = data
    model, steps = captioner.model, -(-len(texts) // cfg.batch_size)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
    order = torch.randperm(len(texts), generator=gen)
    model.train()
    total = 0.0
    for i in tqdm(range(steps), desc=f"epoch {epoch + 1}", leave=False):
        idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
        part = shard(len(idx))  # this process's share of the batch
        x = augment_batch(x_train[idx], cfg.augment, gen)[part].to(device())
        idx = idx[part]
        with autocast():
            loss, image = caption_forward(captioner, x, [texts[j] for j in idx])
            if targets is not None:
                pred = torch.nn.functional.normalize(model.align_head(image).float(), dim=-1)
                loss = loss + cfg.align_weight * (1 - (pred * targets[idx]).sum(-1)).mean()
        total += optimizer_step(loss, optimizer, scheduler, trainable, max_grad_norm=1.0)
    return mean_over_processes(total / steps, 1.0)


def _captions_due(scheduler, cfg: CaptionTrainConfig, steps: int) -> bool:
    """Whether the epoch just trained gets greedy val captions (``cfg.val_captions_every``)."""
    done = scheduler.last_epoch * cfg.epochs // steps  # epochs done: one scheduler step a batch
    return done % cfg.val_captions_every == 0 or done == cfg.epochs


@torch.no_grad()
def _validate(captioner, x_val, val_texts: list[str], scorer) -> dict[str, float]:
    """Val loss, and with a ``scorer`` (None: the loss alone) greedy val captions' scores.

    The scores: BLEU-4, CIDEr, distinct share, view and findings accuracy.
    """
    captioner.model.eval()
    loss, generated = 0.0, []
    for i in range(0, len(val_texts), 32):
        x, texts_i = x_val[i : i + 32].to(device()), val_texts[i : i + 32]
        loss += caption_loss(captioner, x, texts_i).item() * len(texts_i)
        if scorer is not None:
            generated += generate_captions(captioner, x, 1, captioner.cfg.max_length)
    if scorer is None:
        return {"val_loss": loss / len(val_texts)}
    scores = scorer.score(val_texts, generated) | grounding(val_texts, generated)
    return {
        "val_loss": loss / len(val_texts),
        "val_bleu_4": scores["bleu_4"],
        "val_cider": scores["cider"],
        "val_distinct": len(set(generated)) / len(generated),
        "val_view_accuracy": scores["view_accuracy"],
        "val_findings_accuracy": scores["findings_accuracy"],
    }
