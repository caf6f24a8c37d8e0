"""The segmenter's training step against a plain smp training loop, same model and batches.

    python tools/bench_segmenter_step.py [--steps 30] [--profile cpu]

Both sides train the params' segmenter (smp ``Unet``, its encoder and decoder) from the
same initial weights on the same random batches at the profile's image size and batch
size, with AdamW at the params' LR:

- ``cxrlab``: :func:`cxrlab.segmentation.train._train_epoch`, as train_segmenter runs it
  (augmentation, channels-last, the Dice + BCE loss with its ignore region, the schedule);
- ``plain``: the loop from smp's examples: forward, ``smp.losses.DiceLoss`` + BCE,
  backward, step, in the default memory format, without augmentation.

Prints one JSON line: milliseconds per step of each (after two warm-up steps) and their
ratio. Run alone on the machine (issue 18).
"""

import argparse
import copy
import json
import time
from dataclasses import replace

import numpy as np
import segmentation_models_pytorch as smp
import torch

from cxrlab.core.config import load_params
from cxrlab.core.loop import make_optimizer
from cxrlab.core.runtime import memory_format
from cxrlab.core.transforms import to_tensor
from cxrlab.core.utils import seed_everything
from cxrlab.params import parse_section
from cxrlab.segmentation.model import build_segmenter
from cxrlab.segmentation.train import _train_epoch


def plain_loop(model, optimizer, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    """Seconds of smp's plain loop over (x, y) in order."""
    dice = smp.losses.DiceLoss(smp.losses.BINARY_MODE, from_logits=True)
    bce = torch.nn.BCEWithLogitsLoss()
    model.train()
    start = time.perf_counter()
    for i in range(0, len(x), batch):
        logits = model(x[i : i + batch])
        target = y[i : i + batch]
        loss = dice(logits, target) + bce(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    """Time both loops on the same model and data."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--profile", default="cpu")
    args = parser.parse_args()
    params = parse_section({**load_params("params.yaml"), "profile": args.profile}, "segmentation")
    size, batch = params.prepare.image_size, params.train.batch_size
    seed_everything(0)
    images = np.random.default_rng(0).integers(0, 255, (args.steps * batch, size, size), np.uint8)
    masks = (images > 127).astype(np.uint8)  # codes: 1 lung, 0 background
    model = build_segmenter(params.model)
    twin = copy.deepcopy(model)

    cfg = replace(params.train, epochs=2)
    x, y = to_tensor(images, size), torch.as_tensor(masks).unsqueeze(1)
    warm = 2 * batch  # two warm-up steps each, untimed
    optimizer, scheduler = make_optimizer(model, cfg.optim, cfg.epochs * (args.steps + 2))
    model.to(memory_format=memory_format(cfg.channels_last))
    _train_epoch(model, x[:warm], y[:warm], cfg, 0, optimizer, scheduler)
    start = time.perf_counter()
    _train_epoch(model, x, y, cfg, 1, optimizer, scheduler)
    ours = (time.perf_counter() - start) / args.steps

    optimizer = torch.optim.AdamW(twin.parameters(), lr=cfg.optim.lr)
    plain_loop(twin, optimizer, x[:warm], y[:warm].float(), batch)
    plain = plain_loop(twin, optimizer, x, y.float(), batch) / args.steps
    print(json.dumps({"image_size": size, "batch": batch, "steps": args.steps,
                      "cxrlab_ms_per_step": round(ours * 1000, 1),
                      "plain_smp_ms_per_step": round(plain * 1000, 1),
                      "cxrlab_over_plain": round(ours / plain, 3)}))  # fmt: skip


if __name__ == "__main__":
    main()
