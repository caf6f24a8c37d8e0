"""Stage evaluate_generation: domain FID, Inception FID, class agreement, speed and grids.

Scores every sampler x variant that generate_base and generate_lora wrote with the
project's own PneumoniaMNIST classifier: the Fréchet distance of its penultimate features
against the real test images (``domain_fid``; ``val_domain_fid``, against the real val
images with the generated set cut to val's class mix, is the one to choose params by),
the same with the generated set cut to the test split's class mix (``domain_fid_matched``)
and per class (``domain_fid_<class>``), the share of images it assigns to the prompted
class, the mean pairwise feature distance, and the share of saturated pixels
(black-and-white noise from a destroyed adapter is mostly that). Beside it the standard
FID (``inception_fid``: InceptionV3 pool features at 299 px, class mix matched), when
``diffusion.evaluate.inception`` names the network. Real images pass through the same
resize to the generation resolution and back. References: real val vs real test, real
train (the split the generator learnt from) vs each, and test images reconstructed by the
VAE (the autoencoder's floor). Each sampler's grid shows real test images (at the
generation resolution) and the first ``grid_columns`` per class of both variants (same
seeds).

Inputs:  ``diffusion.paths.{generated,classifier,base,data}``; params
         ``diffusion.generate`` (samplers, grid_columns), ``diffusion.evaluate``.
Outputs: ``diffusion.paths.eval_live`` (dvclive); ``paths.figures.scores`` and
         ``paths.figures.<sampler>_grid``.
"""

import json
import logging
from pathlib import Path

import numpy as np

from cxrlab.classification.data import CLASS_NAMES
from cxrlab.core.errors import DataError
from cxrlab.core.live import write_metrics
from cxrlab.generation.evaluate import (
    SetScorer,
    classifier_features,
    compare_samplers,
    inception_features,
    real_sets,
)
from cxrlab.generation.figures import plot_generation_scores, save_sample_grid
from cxrlab.generation.model import reconstruct
from cxrlab.params import load_section
from cxrlab.stage import run_stage

log = logging.getLogger("evaluate_generation")
VARIANTS = ("base", "lora")


def main() -> None:
    """Score each generated set and write the metrics and the figure."""
    params = load_section("diffusion")
    paths, res, weights = params.paths, params.model.resolution, params.evaluate.inception
    real = real_sets(paths.data, res, ("train", "val", "test"))
    inception = inception_features(weights) if weights else None
    scorer = SetScorer(classifier_features(paths.classifier), real, CLASS_NAMES, inception)
    scores: dict[str, dict[str, dict[str, float]]] = {}
    generated: dict[str, dict[str, np.ndarray]] = {}
    for variant, sampler, images, labels, speed in _generated_sets(Path(paths.generated)):
        row = scorer.score(images, labels) | speed
        scores.setdefault(sampler, {})[variant] = row
        generated.setdefault(sampler, {})[variant] = images
        log.info("%s %s: %s", sampler, variant, {k: round(v, 4) for k, v in row.items()})
    for sampler, images in generated.items():
        _save_grid(sampler, images, labels, real["test"], params.generate, paths.figures)
    reference = scorer.reference(reconstruct(paths.base, real["test"][0], res))
    metrics = {**scores, "reference": reference}
    if {"lcm", "ddim"} <= set(scores):
        metrics["lcm_vs_ddim"] = compare_samplers(scores, "lcm", "ddim")
    write_metrics(paths.eval_live, metrics)
    plot_generation_scores(scores, reference["val_vs_test_fid"], paths.figures.scores)
    log.info("reference %s; wrote %s", reference, paths.eval_live)


def _generated_sets(root: Path):
    """(variant, sampler, images, labels, speed) of every set the generate stages wrote."""
    for variant in VARIANTS:
        speed = _read_json(root / variant / "speed.json")
        for sampler in speed:
            with np.load(root / variant / f"{sampler}.npz") as npz:
                yield variant, sampler, npz["images"], npz["labels"], speed[sampler]


def _save_grid(sampler, images: dict, labels, real, cfg, figures) -> None:
    """Real test images, then each variant's, one row per class, same seeds per row."""
    n, sampling = cfg.grid_columns, cfg.samplers[sampler]
    real_images, real_labels = real
    rows = [
        (f"real: {name}", real_images[real_labels == c][:n]) for c, name in enumerate(CLASS_NAMES)
    ]
    rows += [
        (f"{variant}: {name}", images[variant][labels == c][:n])
        for variant in images
        for c, name in enumerate(CLASS_NAMES)
    ]
    title = f"{sampler}, {sampling.steps} steps, guidance {sampling.guidance_scale} (same seeds)"
    save_sample_grid(rows, title, getattr(figures, f"{sampler}_grid"))


def _read_json(path: Path) -> dict:
    if not path.is_file():
        stage = f"generate_{path.parent.name}"
        raise DataError(f"{path} not found: run the {stage} stage first.")
    return json.loads(path.read_text())


if __name__ == "__main__":
    run_stage(main)
