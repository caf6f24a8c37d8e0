"""The captioner's training step with and without the chat template's default system turn.

    python -m tools.bench_caption_prompt [--rounds 5] [--batches 2]

Builds the cpu profile's captioner from params.yaml (the fetched EfficientNet-Lite0 and
SmolLM2 weights, the LoRA of ``captioning.train``) and times one forward and backward of
:func:`cxrlab.captioning.model.caption_forward` on batches of prepared train images and
captions, as ``train_captioner`` runs it, for two settings of ``captioning.model.system``:
None (SmolLM2's template adds its own 19-token system turn) and "" (an empty one). They
alternate on the same batch, so drift in the machine's speed hits both alike. Needs
``make weights`` and ``dvc repro prepare_captions``. Prints one JSON line: the padded row
length (last batch), seconds per step of each setting and the ratio of the medians. Run
alone on the machine.
"""

import argparse
import json
import statistics
import time
from dataclasses import replace

from cxrlab.captioning.data import load_caption_data, split_of
from cxrlab.captioning.model import (
    add_lora,
    build_captioner,
    caption_forward,
    encode_captions,
    pixel_values,
)
from cxrlab.params import load_section

SETTINGS = {"template default": None, "empty": ""}


def main() -> None:
    """Alternate the two settings for ``--rounds`` rounds over ``--batches`` batches."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=2)
    args = parser.parse_args()
    params = load_section("captioning")
    train = params.train
    captioner = build_captioner(params.model)
    add_lora(captioner, train.lora_rank, train.lora_alpha, train.lora_targets,
             train.lora_modules_to_save)  # fmt: skip
    images, texts = split_of(*load_caption_data(params.paths.data), "train")
    captioner.model.train()
    seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    tokens: dict[str, int] = {}
    for _ in range(args.rounds):
        for b in range(args.batches):
            part = slice(b * train.batch_size, (b + 1) * train.batch_size)
            x, batch = pixel_values(captioner, images[part]), texts[part]
            for name, system in SETTINGS.items():
                captioner.cfg = replace(captioner.cfg, system=system)
                tokens[name] = encode_captions(captioner, batch)["input_ids"].shape[1]
                start = time.perf_counter()
                caption_forward(captioner, x, batch)[0].backward()
                seconds[name].append(round(time.perf_counter() - start, 2))
                captioner.model.zero_grad(set_to_none=True)
    medians = {name: statistics.median(v) for name, v in seconds.items()}
    print(json.dumps({
        "padded_row_tokens": tokens,
        "seconds_per_step": seconds,
        "empty_over_default": round(medians["empty"] / medians["template default"], 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
