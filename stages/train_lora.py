"""Stage train_lora: LoRA fine-tune of the diffusion base on the balanced, captioned subset.

The step the seed ran: diffusers + peft LoRA on the UNet's attention, trained on
the imagefolder ``export_clip_subset`` writes (PNG + ``metadata.jsonl`` with
``file_name`` and ``text``), with the class captions as prompts. Run longer with
``dvc exp run -S lora.steps=1000``.

Every ``lora.eval_every`` steps, the denoising loss on ``lora.val_per_class`` real val
images per class (captioned with ``clip.subset.text``, fixed noise) picks the block
kept, and stops a run that diverges with one line naming the step and what to change.

Inputs:  ``diffusion.paths.base``, ``diffusion.paths.subset``, ``diffusion.paths.data``
         (val images); params ``lora``, ``diffusion.model.resolution``, ``clip.subset.text``.
Outputs: ``diffusion.paths.lora`` (``pytorch_lora_weights.safetensors``, diffusers format,
         and ``cxrlab_lora.json``: the training record generate_lora checks);
         ``diffusion.paths.lora_live`` (curves; ``kept``: the record);
         ``paths.figures.lora_training``.
"""

import logging

from cxrlab.classification.data import CLASS_NAMES, load_pneumoniamnist
from cxrlab.core.figures import plot_training_curves
from cxrlab.core.live import epoch_logger
from cxrlab.core.runtime import is_main_process
from cxrlab.core.utils import seed_everything
from cxrlab.generation.imagefolder import read_imagefolder
from cxrlab.generation.model import encode_latents, load_pipeline, save_lora, to_rgb
from cxrlab.generation.train import make_conditioning, train_lora
from cxrlab.params import load_section
from cxrlab.stage import run_stage

log = logging.getLogger("train_lora")


def main() -> None:
    """Fine-tune the LoRA and save it."""
    params, cfg = load_section("diffusion"), load_section("lora")
    captions, paths, res = load_section("clip").subset.text, params.paths, params.model.resolution
    seed_everything(cfg.seed)
    images, texts = read_imagefolder(paths.subset)
    val = load_pneumoniamnist(paths.data)["val"].first_per_class(cfg.val_per_class)
    pipe = load_pipeline(paths.base)
    latents = encode_latents(pipe.vae, to_rgb(images, res))
    cond = make_conditioning(pipe, texts)
    val_latents = encode_latents(pipe.vae, to_rgb(val.images, res))
    val_cond = make_conditioning(pipe, [captions[CLASS_NAMES[y]] for y in val.labels])
    log.info(
        "LoRA rank %d, %d steps on %d images, prompts: %s",
        cfg.rank, cfg.steps, len(images), sorted(set(texts)),
    )  # fmt: skip
    with epoch_logger(paths.lora_live) as (live, log_epoch):
        result = train_lora(
            pipe.unet, pipe.scheduler, latents, cond, val_latents, val_cond, cfg,
            f"{paths.checkpoints}/lora.pt", log_epoch,
        )  # fmt: skip
        # the kept block's record, beside the curves: `dvc exp show` lists it per run
        live.summary["kept"] = {k: int(v) if isinstance(v, bool) else v
                                for k, v in result.record.items()}  # fmt: skip
    if not is_main_process():  # under `accelerate launch`, one process writes
        return
    plot_training_curves(result.history, paths.figures.lora_training)
    save_lora(pipe.unet, paths.lora, result.record)
    log.info("saved %s: %s", paths.lora, result.record)


if __name__ == "__main__":
    run_stage(main)
