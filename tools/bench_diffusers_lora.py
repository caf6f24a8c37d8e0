"""The train_lora stage against diffusers' reference LoRA script, side by side.

    python -m tools.bench_diffusers_lora SCRIPT [--deps DIR] [--steps 100 500]
                                                [--out build/bench_diffusers_lora.tsv]

SCRIPT is ``examples/text_to_image/train_text_to_image_lora.py`` of github.com/huggingface/
diffusers (measured at commit 58eb52c080). It runs unchanged, on what this pipeline trains
its LoRA on: the base pipeline ``train_diffusion_base`` saved (``diffusion.paths.base``),
the imagefolder ``export_clip_subset`` wrote (``diffusion.paths.subset``), at
``diffusion.model.resolution`` (resized, centre-cropped, no flips), with ``lora``'s rank,
batch size, peak lr, warm-up fraction, cosine schedule, weight decay, gradient clipping and
seed, fp32, no data-loader workers. It needs the ``datasets`` package, which is not in the
lock: ``pip install --target DIR 'datasets>=2.19.1'`` and pass ``--deps DIR`` (appended to
the reference's ``sys.path``, after the environment's own packages, so both runs use the
same torch, diffusers, transformers, peft and accelerate).

Ours is the ``train_lora`` stage script in a scratch folder whose inputs link to this
repository's, with ``lora.steps`` set and one validation at the end (``eval_every`` =
steps; the reference validates never). Each runs at two step counts; the difference of the
two wall times over the difference of the steps is the seconds per training step, free of
start-up (imports, loading, our pre-encoding of latents and prompts, saving). Run alone
on the machine, from the repository root, after ``dvc repro train_lora``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from cxrlab.core.config import load_params
from cxrlab.params import apply_profile

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = """\
import runpy, sys
sys.path.append({deps!r})
sys.argv = {argv!r}
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def link_inputs(folder: Path, params: dict) -> None:
    """Link the stage's inputs into ``folder`` at the paths params.yaml gives them."""
    paths = params["diffusion"]["paths"]
    for relative in (paths["base"], paths["subset"], paths["data"]):
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(ROOT / relative)


def timed(cmd: list[str], cwd: Path, log: Path) -> float:
    """Wall seconds of ``cmd`` run in ``cwd``; its output goes to ``log``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode:
        sys.exit(f"{cmd[:3]} failed; its output is in {log}")
    return time.perf_counter() - start


def ours(steps: int, params: dict, logs: Path) -> float:
    """Wall seconds of the train_lora stage script at ``steps`` steps."""
    with tempfile.TemporaryDirectory(prefix="bench-lora-ours-") as tmp:
        folder = Path(tmp)
        link_inputs(folder, params)
        changed = {**params, "lora": {**params["lora"], "steps": steps, "eval_every": steps}}
        (folder / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
        cmd = [sys.executable, str(ROOT / "stages" / "train_lora.py")]
        return timed(cmd, folder, logs / f"ours-{steps}.log")


def reference(script: Path, deps: Path | None, steps: int, params: dict, logs: Path) -> float:
    """Wall seconds of diffusers' script at ``steps`` steps, with the stage's settings."""
    lora, paths = params["lora"], params["diffusion"]["paths"]
    optim = lora["optim"]
    if optim["optimizer"] != "adamw" or optim["schedule"] != "cosine":
        sys.exit("the reference trains with AdamW and a cosine schedule: set lora.optim so.")
    with tempfile.TemporaryDirectory(prefix="bench-lora-reference-") as tmp:
        argv = [
            str(script.resolve()),
            "--pretrained_model_name_or_path", str(ROOT / paths["base"]),
            "--train_data_dir", str(ROOT / paths["subset"]),
            "--resolution", str(params["diffusion"]["model"]["resolution"]), "--center_crop",
            "--train_batch_size", str(lora["batch_size"]),
            "--max_train_steps", str(steps),
            "--learning_rate", str(optim["lr"]),
            "--lr_scheduler", "cosine",
            "--lr_warmup_steps", str(round(optim["warmup_frac"] * steps)),
            "--adam_weight_decay", str(optim["weight_decay"]),
            "--max_grad_norm", str(lora["max_grad_norm"]),
            "--rank", str(lora["rank"]),
            "--seed", str(lora["seed"]),
            "--dataloader_num_workers", "0",
            "--checkpointing_steps", str(10 * steps),
            "--output_dir", str(Path(tmp) / "out"),
            "--cache_dir", str(Path(tmp) / "cache"),
        ]  # fmt: skip
        launch = LAUNCH.format(deps=str(deps.resolve()) if deps else "", argv=argv)
        return timed([sys.executable, "-c", launch], Path(tmp), logs / f"reference-{steps}.log")


def main() -> None:
    """Run both at both step counts, one after the other, and write the table to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("script", type=Path, help="diffusers' train_text_to_image_lora.py")
    parser.add_argument("--deps", type=Path, help="a folder holding the datasets package")
    parser.add_argument("--steps", type=int, nargs=2, default=[100, 500])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "bench_diffusers_lora.tsv")
    args = parser.parse_args()
    params = load_params(ROOT / "params.yaml")
    logs = args.out.parent / "bench_diffusers_lora_logs"
    logs.mkdir(parents=True, exist_ok=True)
    low, high = sorted(args.steps)
    walls = {}
    for steps in (low, high):
        walls["reference", steps] = reference(
            args.script, args.deps, steps, apply_profile(params), logs
        )
        walls["ours", steps] = ours(steps, params, logs)
    per_step = {who: (walls[who, high] - walls[who, low]) / (high - low)
                for who in ("reference", "ours")}  # fmt: skip
    batch = params["lora"]["batch_size"]
    lines = ["what\tdiffusers script\ttrain_lora stage\tratio (ours / theirs)"]
    lines.append(
        f"seconds per step ({low} to {high} steps)\t{per_step['reference']:.4f}\t"
        f"{per_step['ours']:.4f}\t{per_step['reference'] / per_step['ours']:.2f}x speed"
    )
    lines.append(
        f"images per second\t{batch / per_step['reference']:.1f}\t"
        f"{batch / per_step['ours']:.1f}\t{per_step['reference'] / per_step['ours']:.2f}x"
    )
    for steps in (low, high):
        ref, our = walls["reference", steps], walls["ours", steps]
        lines.append(f"whole run, {steps} steps (s)\t{ref:.1f}\t{our:.1f}\t{ref / our:.2f}x speed")
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
