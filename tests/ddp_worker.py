"""Run under `accelerate launch --multi_gpu --num_processes 2`: the trainers other than the
classifier (which tests/test_distributed.py runs as a stage) on tiny data, sharding every
batch and averaging gradients with sync_gradients. Writes, from the main process, each
trainer's losses and how far the replicas' weights drifted apart (they must not).

    accelerate launch --multi_gpu --num_processes 2 tests/ddp_worker.py OUT.json
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from cxrlab.core.runtime import accelerator, is_main_process


def replica_spread(model: torch.nn.Module) -> float:
    """The largest difference of any weight between the processes (0 when in sync)."""
    flat = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])
    acc = accelerator()
    highest, lowest = acc.reduce(flat, "max"), -acc.reduce(-flat, "max")  # it has no "min"
    return float((highest - lowest).max())


def segmenter():
    import tempfile
    from pathlib import Path

    from cxrlab.segmentation.config import SegTrainConfig
    from cxrlab.segmentation.model import build_segmenter
    from cxrlab.segmentation.train import train_segmenter
    from tests import tiny
    from tests.lungseg_fixtures import write_covid

    with tempfile.TemporaryDirectory() as tmp:  # the split is read into memory
        train, val = tiny.segmentation_split(write_covid(Path(tmp) / "covid_lungseg"))
    model = build_segmenter(tiny.SEGMENTER)
    result = train_segmenter(model, train, val, SegTrainConfig(epochs=3, batch_size=4))
    return model, [row["train_loss"] for row in result.history]


def clip():
    from cxrlab.classification.data import CLASS_NAMES
    from cxrlab.labeling.config import ClipTrainConfig
    from cxrlab.labeling.model import build_clip
    from cxrlab.labeling.train import train_clip
    from tests import tiny
    from tests.conftest import synthetic_split

    images, labels = synthetic_split(64, np.random.default_rng(0))
    labels = labels.ravel()
    bundle = build_clip(tiny.CLIP)
    cfg = ClipTrainConfig(
        epochs=3,
        batch_size=16,
        optim=tiny.optim(ClipTrainConfig, lr=3e-3),
        captions=tiny.CLIP_CAPTIONS,
    )
    history = train_clip(bundle, bundle.images_to_tensor(images), labels, list(CLASS_NAMES), cfg)
    return bundle.model, [row["train_loss"] for row in history.history]


def captioner():
    from cxrlab.captioning.config import CaptionTrainConfig
    from cxrlab.captioning.model import build_captioner
    from cxrlab.captioning.train import train_captioner
    from cxrlab.core.augment import AugmentConfig
    from tests import tiny

    images, texts = tiny.caption_images(), [tiny.CAPTIONS[i % 2] for i in range(8)]
    model = build_captioner(tiny.captioner("blip"))
    cfg = CaptionTrainConfig(
        epochs=4,
        batch_size=4,
        optim=tiny.optim(CaptionTrainConfig, lr=1e-2),
        augment=AugmentConfig(),
    )
    result = train_captioner(model, (images, texts), (images, texts), cfg)
    return model.model, [row["val_loss"] for row in result.history]


def lora():
    from cxrlab.generation.config import LoraTrainConfig
    from cxrlab.generation.model import build_pipeline, encode_latents, to_rgb
    from cxrlab.generation.train import make_conditioning, train_lora
    from tests import tiny

    images = np.random.default_rng(0).integers(0, 256, (24, 28, 28), dtype=np.uint8)
    pipe = build_pipeline(tiny.DIFFUSION, seed=0)
    z = encode_latents(pipe.vae, to_rgb(images, 16))
    cond = make_conditioning(pipe, ["normal lungs", "pneumonia"] * 12)
    cfg = LoraTrainConfig(
        steps=6, eval_every=2, batch_size=8, optim=tiny.optim(LoraTrainConfig, lr=1e-2)
    )
    result = train_lora(pipe.unet, pipe.scheduler, z, cond, z[:8], cond, cfg)
    return pipe.unet, [row["train_loss"] for row in result.history]


def main() -> None:
    report = {"processes": accelerator().num_processes}
    for name, train in [("segmenter", segmenter), ("clip", clip), ("captioner", captioner),
                        ("lora", lora)]:  # fmt: skip
        torch.manual_seed(0)  # the same initial weights in every process
        model, losses = train()
        report[name] = {"losses": losses, "spread": replica_spread(model)}
    if is_main_process():
        with open(sys.argv[1], "w") as f:
            json.dump(report, f)


if __name__ == "__main__":
    main()
