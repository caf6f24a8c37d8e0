"""Channels-last against the default memory format: CLIP and UNet steps, FID Inception.

    python -m tools.bench_memory_format [--rounds 3] [--steps 6] [--models clip unet inception]

The CLIP and UNet are built from params.yaml's cpu profile with random weights:

- ``clip``: :func:`cxrlab.labeling.train._train_epoch`, as train_clip runs it (augmentation,
  the label-aware loss), on random images at the arch's size and the train batch size,
  with ``clip.train.channels_last`` on and off;
- ``unet``: one AdamW step of the diffusion base's ``UNet2DConditionModel`` on a batch of
  latents, with the weights and the latents channels-last or not.

The two formats alternate for ``--rounds`` rounds, so drift in the machine's speed hits both
alike. Prints one JSON line per model: milliseconds per step of each round and the ratio
of the medians. Run alone on the machine.
"""

import argparse
import json
import statistics
import time
from dataclasses import replace

import torch

from cxrlab.core.config import load_params
from cxrlab.core.loop import make_optimizer
from cxrlab.core.runtime import memory_format
from cxrlab.core.utils import seed_everything
from cxrlab.generation.model import build_unet
from cxrlab.labeling.model import build_clip
from cxrlab.labeling.train import _train_epoch
from cxrlab.params import parse_section


def clip_step(params, steps: int):
    """A function timing ``steps`` train_clip steps with channels-last on or off."""
    cfg = params.train
    size = params.arch.vision["image_size"]
    x = torch.rand(cfg.batch_size * steps, 3, size, size) * 2 - 1
    y = torch.arange(len(x)) % 2
    names = sorted(cfg.captions)

    def run(channels_last: bool) -> float:
        seed_everything(0)
        bundle = build_clip(params.arch)
        tokens = bundle.tokenizer([t for c in names for t in cfg.captions[c]])
        per = len(cfg.captions[names[0]])
        by_class = [torch.arange(k * per, (k + 1) * per) for k in range(len(names))]
        run_cfg = replace(cfg, channels_last=channels_last)
        bundle.model.to(memory_format=memory_format(run_cfg.channels_last))  # as train_clip does
        optimizer, scheduler = make_optimizer(bundle.model, cfg.optim, 2 * steps + 2)
        warm = cfg.batch_size  # one untimed warm-up step
        _train_epoch(bundle.model, x[:warm], y[:warm], run_cfg, 0, tokens, by_class,
                     optimizer, scheduler)  # fmt: skip
        start = time.perf_counter()
        _train_epoch(bundle.model, x, y, run_cfg, 1, tokens, by_class, optimizer, scheduler)
        return (time.perf_counter() - start) / steps

    return run


def unet_step(params, steps: int):
    """A function timing ``steps`` AdamW steps of the base UNet, channels-last or not."""
    model, batch = params.model, params.base_train.batch_size
    side = model.resolution // 2 ** (len(model.vae.block_out_channels) - 1)
    latents = torch.randn(batch, model.vae.latent_channels, side, side)
    text = torch.randn(batch, model.text.max_length, model.text.hidden_size)
    t = torch.randint(0, model.noise.num_train_timesteps, (batch,))

    def run(channels_last: bool) -> float:
        seed_everything(0)
        unet = build_unet(model.unet, side, model.vae.latent_channels, model.text.hidden_size)
        fmt = memory_format(channels_last)
        unet.to(memory_format=fmt)
        z = latents.contiguous(memory_format=fmt)
        optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-4)

        def step():
            loss = unet(z, t, text).sample.pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        step()  # warm-up, untimed
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - start) / steps

    return run


def inception_batch(weights: str, steps: int):
    """A function timing ``steps`` Inception batches, rebuilt channels-last or as shipped."""
    from cxrlab.core.pretrained import load_torchscript
    from cxrlab.generation.inception import fast_inception

    script = load_torchscript(weights)
    fast = fast_inception(script)  # rebuilt once, as inception_features does
    x = torch.rand(50, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1

    @torch.no_grad()
    def run(channels_last: bool) -> float:
        net = fast if channels_last else script
        net(x[:2])  # warm-up, untimed
        start = time.perf_counter()
        for _ in range(steps):
            net(x)
        return (time.perf_counter() - start) / steps

    with torch.no_grad():
        run.max_abs_diff = float((fast(x) - script(x)).abs().max())
    return run


def main() -> None:
    """Alternate the two formats for each model and print the timings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--models", nargs="+", default=["clip", "unet"])
    args = parser.parse_args()
    raw = load_params("params.yaml")
    builders = {
        "clip": lambda: clip_step(parse_section(raw, "clip"), args.steps),
        "unet": lambda: unet_step(parse_section(raw, "diffusion"), args.steps),
        "inception": lambda: inception_batch(
            parse_section(raw, "diffusion").evaluate.inception, args.steps
        ),
    }
    for name in args.models:
        run = builders[name]()
        ms = {"channels_last": [], "default": []}
        for _ in range(args.rounds):
            ms["channels_last"].append(round(run(True) * 1000, 1))
            ms["default"].append(round(run(False) * 1000, 1))
        ratio = statistics.median(ms["channels_last"]) / statistics.median(ms["default"])
        row = {"model": name, "threads": torch.get_num_threads(), "ms_per_step": ms,
               "channels_last_over_default": round(ratio, 3)}  # fmt: skip
        if hasattr(run, "max_abs_diff"):
            row["max_abs_feature_diff"] = run.max_abs_diff
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
