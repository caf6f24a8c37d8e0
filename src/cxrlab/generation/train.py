"""Training the Stable Diffusion parts: VAE, base UNet, LoRA, LCM-LoRA distillation.

All four run through :func:`cxrlab.core.loop.fit`, so each checkpoints after
every block of steps and resumes where it stopped. A block is an epoch for the VAE
and the base UNet, and ``eval_every`` steps for the two LoRA trainers. Each block's
randomness (batches, noise, timesteps, caption dropout) is drawn from a generator
seeded with (seed, block), so a resumed run ends with the same weights.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cxrlab.core.checkpoint import fingerprint
from cxrlab.core.loop import (
    KEEP_LAST,
    DivergenceGuard,
    Keep,
    TrainResult,
    fit,
    make_optimizer,
    model_signature,
    optimizer_step,
    trainable_weights,
)
from cxrlab.core.runtime import autocast, device, mean_over_processes, shard
from cxrlab.generation.config import (
    BaseTrainConfig,
    LcmTrainConfig,
    LoraTrainConfig,
    VaeTrainConfig,
)
from cxrlab.generation.model import add_lora, pixel_batch

OnEpoch = Callable[[dict[str, float]], None] | None


@dataclass
class Conditioning:
    """Prompt embeddings: a bank of prompts, each sample's prompt, and the empty prompt.

    Attributes:
        bank: (K, L, D) text-encoder states of the K distinct prompts.
        which: (N,) index into ``bank`` for each training sample.
        empty: (L, D) states of the empty prompt (caption dropout, guidance).
    """

    bank: torch.Tensor
    which: torch.Tensor
    empty: torch.Tensor

    def batch(self, idx: torch.Tensor, drop_prob: float, gen: torch.Generator) -> torch.Tensor:
        """The states for samples ``idx``; each is the empty prompt with ``drop_prob``."""
        states = self.bank[self.which[idx]]
        drop = (torch.rand(len(idx), generator=gen) < drop_prob).to(states.device)
        return torch.where(drop[:, None, None], self.empty, states)

    def to(self, where) -> Conditioning:
        """The prompt states on device ``where`` (the indices stay on the CPU)."""
        return Conditioning(self.bank.to(where), self.which, self.empty.to(where))


def train_vae(vae, train_x, val_x, cfg: VaeTrainConfig, checkpoint=None, on_epoch: OnEpoch = None):
    """Train an ``AutoencoderKL`` in place on images (N, 3, H, W) in [-1, 1].

    The best epoch is picked on validation reconstruction MSE (also reported as PSNR).
    """
    steps = len(train_x) // cfg.batch_size or 1
    vae.to(device())
    train_x, val_x = train_x.to(device()), val_x.to(device())
    optimizer, scheduler = make_optimizer(vae, cfg.optim, cfg.epochs * steps)

    def loss(idx, gen):
        post = vae.encode(train_x[idx]).latent_dist
        z = post.mean + post.std * _randn(post.mean.shape, gen, post.mean.device)
        return F.mse_loss(vae.decode(z).sample, train_x[idx]) + cfg.kl_weight * post.kl().mean()

    @torch.no_grad()
    def validate():
        vae.eval()
        errs = [
            F.mse_loss(vae.decode(vae.encode(b).latent_dist.mean).sample, b, reduction="sum")
            for b in val_x.split(256)
        ]
        mse = float(sum(errs) / val_x.numel())
        return {"val_loss": mse, "val_psnr": 10 * math.log10(4.0 / mse)}

    run_id = fingerprint(asdict(cfg), model_signature(vae), tuple(train_x.shape))
    result = fit(
        vae,
        optimizer=optimizer,
        scheduler=scheduler,
        epochs=cfg.epochs,
        run_id=run_id,
        train_epoch=lambda i: _train_block(
            vae, optimizer, scheduler, loss, len(train_x), cfg, steps, i
        ),
        validate=validate,
        keep=Keep.best("val_loss"),
        checkpoint=checkpoint,
        on_epoch=on_epoch,
    )
    vae.to("cpu")
    return result


def train_base_unet(
    unet, noise_scheduler, latents, val_latents, cond: Conditioning, val_cond: Conditioning,
    cfg: BaseTrainConfig, checkpoint=None, on_epoch: OnEpoch = None,
) -> tuple[TrainResult, nn.Module]:  # fmt: skip
    """Train the base UNet on scaled latents; return the result and the EMA UNet.

    Validation is the denoising loss of the EMA weights on the validation latents,
    with noise and timesteps fixed across epochs so the values compare.
    """
    unet.to(device())
    latents, val_latents = latents.to(device()), val_latents.to(device())
    cond, val_cond = cond.to(device()), val_cond.to(device())
    ema = copy.deepcopy(unet).requires_grad_(False)
    both = nn.ModuleDict({"unet": unet, "ema": ema})
    steps = len(latents) // cfg.batch_size or 1
    optimizer, scheduler = make_optimizer(unet, cfg.optim, cfg.epochs * steps)

    def loss(idx, gen):
        emb = cond.batch(idx, cfg.uncond_prob, gen)
        return denoising_loss(unet, noise_scheduler, latents[idx], emb, gen)

    def update_ema():
        step = scheduler.last_epoch
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), unet.parameters(), strict=True):
                e.lerp_(p, 1 - decay)

    def validate():
        return {"val_loss": fixed_denoising_loss(ema, noise_scheduler, val_latents, val_cond)}

    run_id = fingerprint(asdict(cfg), model_signature(unet), tuple(latents.shape))
    result = fit(
        both,
        optimizer=optimizer,
        scheduler=scheduler,
        epochs=cfg.epochs,
        run_id=run_id,
        train_epoch=lambda epoch: _train_block(
            unet, optimizer, scheduler, loss, len(latents), cfg, steps, epoch, update_ema
        ),
        validate=validate,
        keep=KEEP_LAST,
        checkpoint=checkpoint,
        on_epoch=on_epoch,
    )
    both.to("cpu")
    return result, ema


def train_lora(
    unet, noise_scheduler, latents, cond: Conditioning, val_latents, val_cond: Conditioning,
    cfg: LoraTrainConfig, checkpoint=None, on_epoch: OnEpoch = None,
) -> TrainResult:  # fmt: skip
    """Add a LoRA to ``unet`` and train only it for ``cfg.steps`` steps.

    Every ``cfg.eval_every`` steps the denoising loss on ``val_latents`` (fixed noise and
    timesteps) is measured; the block with the lowest is kept, and a run whose val loss
    runs away stops with :class:`~cxrlab.core.errors.TrainingDiverged` (see the config).
    """
    add_lora(unet, cfg.rank, cfg.alpha, cfg.target_modules)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()  # recompute activations in backward: less memory
    unet.to(device())
    latents, cond = latents.to(device()), cond.to(device())
    val_latents, val_cond = val_latents.to(device()), val_cond.to(device())

    def loss(idx, gen):
        emb = cond.batch(idx, cfg.uncond_prob, gen)
        return denoising_loss(unet, noise_scheduler, latents[idx], emb, gen, cfg.snr_gamma)

    def validate():
        return {"val_loss": fixed_denoising_loss(unet, noise_scheduler, val_latents, val_cond)}

    base_val_loss = validate()["val_loss"]  # the LoRA starts as a no-op: the base model's
    guard = DivergenceGuard(
        "val_loss", cfg.diverge_factor, cfg.diverge_patience, "lora",
        f"lower lora.optim.lr (now {cfg.optim.lr:g}), raise lora.optim.warmup_frac "
        f"(now {cfg.optim.warmup_frac:g}) "
        f"or lower lora.max_grad_norm (now {cfg.max_grad_norm:g}).", cfg.eval_every,
    )  # fmt: skip

    guard.start_from(base_val_loss)

    def on_block(row):
        if on_epoch:
            on_epoch(row)
        guard(row)

    keep = Keep.best("val_loss")
    result = _fit_steps(unet, loss, len(latents), cfg, checkpoint, on_block, validate, keep)
    val_loss = result.best_score
    result.record = {
        "steps": cfg.steps,
        "kept_step": min(result.best_epoch * cfg.eval_every, cfg.steps),
        "val_loss": val_loss,
        "base_val_loss": base_val_loss,
        "final_val_loss": result.history[-1]["val_loss"],
        "diverged": not math.isfinite(val_loss) or val_loss > cfg.diverge_factor * base_val_loss,
    }
    return result


def distill_lcm(
    unet, noise_scheduler, latents, val_latents, cond: Conditioning, val_cond: Conditioning,
    cfg: LcmTrainConfig, checkpoint=None, on_epoch: OnEpoch = None,
) -> TrainResult:  # fmt: skip
    """Latent consistency distillation of ``unet`` into a LoRA on it (LCM-LoRA).

    The teacher is ``unet`` with the adapter switched off; it takes one DDIM step
    (``ddim_timesteps`` skipping) from a noised latent, with classifier-free guidance
    ``teacher_guidance``. The student (``unet`` with the LoRA) must map both ends of
    that step to the same clean latent, under the consistency boundary conditions
    that ``LCMScheduler`` applies at sampling time.
    """
    add_lora(unet, cfg.rank, None, cfg.target_modules)
    unet.to(device())
    latents, val_latents = latents.to(device()), val_latents.to(device())
    cond, val_cond = cond.to(device()), val_cond.to(device())
    solver = ConsistencySolver(noise_scheduler, cfg.ddim_timesteps)

    def loss(idx, gen):
        emb = cond.batch(idx, 0.0, gen)
        return solver.loss(unet, latents[idx], emb, cond.empty, cfg, gen)

    @torch.no_grad()
    def validate():
        gen = torch.Generator().manual_seed(1234)
        z, idx = val_latents[:256], torch.arange(min(256, len(val_latents)))
        return {"val_loss": float(solver.loss(unet, z, val_cond.bank[val_cond.which[idx]],
                                              val_cond.empty, cfg, gen))}  # fmt: skip

    return _fit_steps(unet, loss, len(latents), cfg, checkpoint, on_epoch, validate, KEEP_LAST)


class ConsistencySolver:
    """The DDIM skipping schedule and the latent consistency distillation loss."""

    def __init__(self, noise_scheduler, ddim_timesteps: int):
        total = noise_scheduler.config.num_train_timesteps
        self.prediction_type = noise_scheduler.config.prediction_type
        self.alphas_cumprod = noise_scheduler.alphas_cumprod.float()
        self.skip = total // ddim_timesteps
        self.timesteps = torch.arange(1, ddim_timesteps + 1) * self.skip - 1

    def loss(self, unet, z0, emb, empty, cfg: LcmTrainConfig, gen) -> torch.Tensor:
        """The pseudo-Huber consistency loss for one batch of clean latents ``z0``."""
        index = torch.randint(0, len(self.timesteps), (len(z0),), generator=gen)
        t_start = self.timesteps[index].to(z0.device)
        t_prev = (t_start - self.skip).clamp(min=0)
        noise = _randn(z0.shape, gen, z0.device)
        a_start = self._alpha(t_start)
        z_start = a_start.sqrt() * z0 + (1 - a_start).sqrt() * noise

        student = self._consistency(unet(z_start, t_start, emb).sample, z_start, t_start)
        with torch.no_grad():
            unet.disable_adapters()
            eps = unet(z_start, t_start, emb).sample
            if cfg.teacher_guidance != 1.0:
                eps_u = unet(z_start, t_start, empty.expand_as(emb)).sample
                eps = eps_u + cfg.teacher_guidance * (eps - eps_u)
            unet.enable_adapters()
            x0 = self._x0(eps, z_start, t_start)
            eps = (z_start - a_start.sqrt() * x0) / (1 - a_start).sqrt()
            a_prev = self._alpha(t_prev)
            z_prev = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
            target = self._consistency(unet(z_prev, t_prev, emb).sample, z_prev, t_prev)
        c = cfg.huber_c
        return (torch.sqrt((student.float() - target.float()) ** 2 + c * c) - c).mean()

    def _alpha(self, t: torch.Tensor) -> torch.Tensor:
        return self.alphas_cumprod.to(t.device)[t].view(-1, 1, 1, 1)

    def _x0(self, out: torch.Tensor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self._alpha(t)
        if self.prediction_type == "v_prediction":
            return a.sqrt() * z - (1 - a).sqrt() * out
        return (z - (1 - a).sqrt() * out) / a.sqrt()

    def _consistency(self, out, z, t, sigma_data: float = 0.5, scaling: float = 10.0):
        """f(z, t) = c_skip(t) z + c_out(t) x0(z, t), the boundary conditions LCMScheduler uses."""
        scaled = (scaling * t.float()).view(-1, 1, 1, 1)
        c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
        c_out = scaled / (scaled**2 + sigma_data**2).sqrt()
        return c_skip * z + c_out * self._x0(out, z, t)


def denoising_loss(unet, noise_scheduler, z0, emb, gen, snr_gamma=None) -> torch.Tensor:
    """The diffusion training loss: predict the noise (or v) added at a random timestep.

    With ``snr_gamma``, each sample's error is weighted by min(SNR, gamma) / SNR
    (``/ (SNR + 1)`` for v-prediction): the Min-SNR-gamma weighting.
    """
    noise = _randn(z0.shape, gen, z0.device)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (len(z0),), generator=gen)
    t = t.to(z0.device)
    noisy = noise_scheduler.add_noise(z0, noise, t)
    v_pred = noise_scheduler.config.prediction_type == "v_prediction"
    target = noise_scheduler.get_velocity(z0, noise, t) if v_pred else noise
    pred = unet(noisy, t, emb).sample
    if snr_gamma is None:
        return F.mse_loss(pred, target)
    alpha_bar = noise_scheduler.alphas_cumprod.to(z0.device)[t]
    snr = alpha_bar / (1 - alpha_bar)
    weight = torch.clamp(snr, max=snr_gamma) / (snr + 1 if v_pred else snr)
    per_sample = F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))
    return (weight * per_sample).mean()


@torch.no_grad()
def fixed_denoising_loss(unet, noise_scheduler, latents, cond: Conditioning):
    """:func:`denoising_loss` over all ``latents`` with a fixed seed (comparable values).

    In batches of at most 2**16 latent pixels (256 at 8x8, 16 at SD's 64x64).
    """
    unet.eval()
    gen = torch.Generator().manual_seed(1234)
    losses = []
    batch = pixel_batch(latents.shape[-1] * latents.shape[-2], 2**16)
    for idx in torch.arange(len(latents)).split(batch):
        emb = cond.bank[cond.which[idx]]
        with autocast():
            loss = denoising_loss(unet, noise_scheduler, latents[idx], emb, gen).float()
        losses.append(loss * len(idx))
    return float(sum(losses) / len(latents))


def _fit_steps(unet, loss, n, cfg, checkpoint, on_epoch, validate, keep: Keep) -> TrainResult:
    """Run ``cfg.steps`` steps of a LoRA trainer in blocks of ``cfg.eval_every``.

    ``keep`` picks the block kept; gradients are clipped to
    ``cfg.max_grad_norm`` (0: not clipped). Only the LoRA's weights are kept and
    checkpointed (:func:`~cxrlab.core.loop.trainable_weights`).
    """
    blocks = math.ceil(cfg.steps / cfg.eval_every)
    holder = trainable_weights(unet)
    # the schedule spans exactly cfg.steps, also when eval_every does not divide it
    optimizer, scheduler = make_optimizer(holder, cfg.optim, cfg.steps)

    def block(i):
        steps = min(cfg.eval_every, cfg.steps - i * cfg.eval_every)
        return _train_block(unet, optimizer, scheduler, loss, n, cfg, steps, i,
                            max_grad_norm=cfg.max_grad_norm)  # fmt: skip

    run_id = fingerprint(asdict(cfg), model_signature(unet), model_signature(holder), n)
    result = fit(
        holder,
        optimizer=optimizer,
        scheduler=scheduler,
        epochs=blocks,
        run_id=run_id,
        train_epoch=block,
        validate=validate,
        keep=keep,
        checkpoint=checkpoint,
        on_epoch=on_epoch,
    )
    unet.to("cpu")
    return result


def _randn(shape, gen: torch.Generator, where: torch.device) -> torch.Tensor:
    """Standard normal noise drawn on the CPU from ``gen`` (the same on any device), then moved."""
    return torch.randn(shape, generator=gen).to(where)


def _train_block(
    model, optimizer, scheduler, loss_fn, n, cfg, steps, block, after_step=None, max_grad_norm=0.0
):  # fmt: skip
    """Train ``steps`` batches drawn from ``n`` samples; return the mean loss."""
    model.train()
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + block)
    total = 0.0
    bar = tqdm(_batches(n, cfg.batch_size, steps, gen), total=steps, desc=f"block {block + 1}",
               leave=False)  # fmt: skip
    for idx in bar:
        with autocast():
            loss = loss_fn(idx[shard(len(idx))], gen).float()  # this process's share
        value = optimizer_step(loss, optimizer, scheduler, model.parameters(), max_grad_norm)
        if after_step:
            after_step()
        total += value
        bar.set_postfix(loss=f"{value:.4f}")
    return mean_over_processes(total / steps, 1.0)


def _batches(n: int, batch_size: int, steps: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """``steps`` index batches, walking through reshuffled permutations of ``range(n)``."""
    order, pos = torch.randperm(n, generator=gen), 0
    for _ in range(steps):
        if pos + batch_size > n and pos > 0:
            order, pos = torch.randperm(n, generator=gen), 0
        yield order[pos : pos + batch_size]
        pos += batch_size


def make_conditioning(pipe, texts: list[str]) -> Conditioning:
    """Encode each distinct caption once; ``texts`` gives every sample's caption."""
    from cxrlab.generation.model import encode_prompts

    prompts = sorted(set(texts))
    index = {p: i for i, p in enumerate(prompts)}
    return Conditioning(
        bank=encode_prompts(pipe, prompts),
        which=torch.tensor([index[t] for t in texts]),
        empty=encode_prompts(pipe, [""])[0],
    )
