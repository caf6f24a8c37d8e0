"""Stage export_clip_subset: a class-balanced imagefolder for the diffusion LoRA.

Draws ``clip.subset.per_class`` images per class from one split, by ground truth or
by confident auto labels, and writes them as PNG with ``metadata.jsonl`` rows
``{"file_name", "text"}`` (Hugging Face imagefolder, read by diffusers).

Inputs:  ``clip.paths.labels``, ``clip.paths.data``; params ``clip.subset``.
Outputs: ``clip.paths.subset``.
"""

import logging

from cxrlab.classification.data import CLASS_NAMES, load_pneumoniamnist
from cxrlab.core.errors import ConfigError
from cxrlab.generation.imagefolder import write_imagefolder
from cxrlab.labeling.labels import read_labels, select_balanced
from cxrlab.params import load_section
from cxrlab.stage import run_stage

log = logging.getLogger("export_clip_subset")


def main() -> None:
    """Select the balanced subset and write it."""
    params = load_section("clip")
    cfg = params.subset
    missing = [c for c in CLASS_NAMES if not cfg.text.get(c)]
    if missing:
        raise ConfigError(f"clip.subset.text has no caption for class '{missing[0]}'.")
    rows = read_labels(params.paths.labels)
    picked = select_balanced(
        rows, cfg.split, cfg.per_class, CLASS_NAMES, cfg.label_source, cfg.min_confidence, cfg.seed
    )
    images = load_pneumoniamnist(params.paths.data)[cfg.split].images
    write_imagefolder(
        params.paths.subset,
        [images[i] for i, _ in picked],
        [cfg.text[name] for _, name in picked],
        [f"{name}_{cfg.split}-{i:05d}" for i, name in picked],
    )
    log.info(
        "wrote %d images (%d per class, %s labels) to %s",
        len(picked),
        cfg.per_class,
        cfg.label_source,
        params.paths.subset,
    )


if __name__ == "__main__":
    run_stage(main)
