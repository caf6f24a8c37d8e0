"""BLIP-base (full-size skeleton) through the captioner's code on a GPU: train steps, decoding.

    HF_HOME=/tmp/hf HF_HUB_OFFLINE=1 python tools/bench_blip_gpu.py

Writes the skeleton into HF_HOME, loads it by hub id as the gpu profile does, then times
AdamW steps under bf16 autocast and beam-search decoding at batch 8 (the profile's) and 32,
with the peak VRAM of each (BENCHMARKS.md, "gpu profile").
"""

import os
import time

import numpy as np
import torch

from cxrlab.captioning.config import CaptionerConfig
from cxrlab.captioning.model import build_captioner, caption_loss, generate_captions, pixel_values
from cxrlab.core.loop import optimizer_step
from cxrlab.core.runtime import autocast, device, use_device, use_precision
from cxrlab.skeletons import BLIP_BASE, FULL, blip_base

t = time.time()
blip_base(os.environ["HF_HOME"], FULL)
print(f"skeleton BLIP-base full: {time.time() - t:.1f} s", flush=True)
use_device("cuda")
use_precision("bf16")
cap = build_captioner(CaptionerConfig(family="blip", pretrained=BLIP_BASE))
cap.model.to(device())
n = sum(p.numel() for p in cap.model.parameters())
print(f"params {n / 1e6:.1f} M, image_size {cap.cfg.image_size}", flush=True)
texts = ["the lungs are clear. no pleural effusion or pneumothorax. the heart size is normal."]
for batch in (8, 32):
    x = pixel_values(
        cap, np.random.default_rng(0).integers(0, 256, (batch, 256, 256), dtype=np.uint8)
    ).to(device())
    opt = torch.optim.AdamW(cap.model.parameters(), lr=5e-5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    torch.cuda.reset_peak_memory_stats()
    cap.model.train()
    for i in range(25):
        if i == 5:
            torch.cuda.synchronize()
            t = time.time()
        with autocast():
            loss = caption_loss(cap, x, texts * batch)
        optimizer_step(loss.float(), opt, sched, cap.model.parameters(), 1.0)
    torch.cuda.synchronize()
    dt = (time.time() - t) / 20
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(
        f"train batch {batch} at 384 px, bf16 autocast, AdamW: {dt * 1000:.0f} ms/step, "
        f"{batch / dt:.0f} images/s, peak VRAM {peak:.2f} GB, loss {loss.item():.3f}",
        flush=True,
    )
    del opt
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    t = time.time()
    with torch.no_grad(), autocast():
        out = generate_captions(cap, x, num_beams=3, max_new_tokens=40)
    torch.cuda.synchronize()
    dt = time.time() - t
    peak = torch.cuda.max_memory_allocated() / 2**30
    print(
        f"beam 3, 40 new tokens, batch {batch}: {dt:.2f} s ({batch / dt:.1f} images/s), "
        f"peak VRAM {peak:.2f} GB; first caption: {out[0][:60]!r}",
        flush=True,
    )
