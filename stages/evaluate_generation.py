"""Stage evaluate_generation: domain FID, class agreement, diversity, speed and grids.

Scores every sampler x variant that generate_base and generate_lora wrote with the project's own
PneumoniaMNIST classifier: Fréchet distance of its penultimate features against
the real test images (and, as ``val_domain_fid``, against the real val images: the one
to choose params by), the share of images it assigns to the prompted class, and mean
pairwise feature distance; and the share of saturated pixels (black-and-white
noise from a destroyed adapter is mostly that). Real images pass through the same resize to the
generation resolution and back. References: real val vs real test, and test
images reconstructed by the VAE (the autoencoder's floor). Each sampler's grid shows real
test images and the first ``grid_columns`` per class of both variants (same seeds).

Inputs:  ``diffusion.paths.{generated,classifier,base,data}``; params
         ``diffusion.generate`` (samplers, grid_columns).
Outputs: ``diffusion.paths.metrics`` (generation.json); ``<figures>/scores.png`` and
         ``<figures>/<sampler>_grid.png``.
"""

import json
import logging
from pathlib import Path

import numpy as np

from cxrlab.classification.data import CLASS_NAMES, load_pneumoniamnist
from cxrlab.classification.model import embed, load_classifier, predict_proba
from cxrlab.core.errors import DataError
from cxrlab.core.transforms import to_tensor, to_uint8
from cxrlab.core.utils import write_json
from cxrlab.generation.evaluate import (
    compare_samplers,
    frechet_distance,
    mean_pairwise_distance,
    saturated_fraction,
    score_set,
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
    paths, res = params.paths, params.model.resolution
    features = _classifier_features(paths.classifier)
    splits = load_pneumoniamnist(paths.data)
    real = {s: to_uint8(to_tensor(splits[s].images, res)) for s in ("val", "test")}
    real_test, _ = features(real["test"])
    real_val, _ = features(real["val"])
    scores: dict[str, dict[str, dict[str, float]]] = {}
    generated: dict[str, dict[str, np.ndarray]] = {}
    for variant, sampler, images, labels, speed in _generated_sets(Path(paths.generated)):
        feats, prob = features(images)
        row = score_set(feats, prob, labels, real_test, CLASS_NAMES) | speed
        row["val_domain_fid"] = frechet_distance(feats, real_val)  # choose on this
        row["saturated"] = saturated_fraction(images)
        scores.setdefault(sampler, {})[variant] = row
        generated.setdefault(sampler, {})[variant] = images
        log.info("%s %s: %s", sampler, variant, {k: round(v, 4) for k, v in row.items()})
    for sampler, images in generated.items():
        _save_grid(sampler, images, labels, splits["test"], params.generate, paths.figures)
    reference = {
        "val_vs_test_fid": frechet_distance(real_val, real_test),
        "vae_reconstruction_fid": frechet_distance(
            features(reconstruct(paths.base, real["test"], res))[0], real_test
        ),
        "test_diversity": mean_pairwise_distance(real_test),
        "test_saturated": saturated_fraction(real["test"]),
    }
    metrics = {**scores, "reference": reference}
    if {"lcm", "ddim"} <= set(scores):
        metrics["lcm_vs_ddim"] = compare_samplers(scores, "lcm", "ddim")
    write_json(paths.metrics, metrics)
    plot_generation_scores(scores, reference["val_vs_test_fid"], Path(paths.figures) / "scores.png")
    log.info("reference %s; wrote %s", reference, paths.metrics)


def _classifier_features(path: str):
    """A function from uint8 images to the classifier's features and probabilities."""
    model, meta = load_classifier(path)

    def features(images):
        x = to_tensor(images, meta["image_size"])
        return embed(model, x).numpy(), predict_proba(model, x).numpy()

    return features


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
    rows = [
        (f"real: {name}", real.images[real.labels == c][:n]) for c, name in enumerate(CLASS_NAMES)
    ]
    rows += [
        (f"{variant}: {name}", images[variant][labels == c][:n])
        for variant in images
        for c, name in enumerate(CLASS_NAMES)
    ]
    title = f"{sampler}, {sampling.steps} steps, guidance {sampling.guidance_scale} (same seeds)"
    save_sample_grid(rows, title, Path(figures) / f"{sampler}_grid.png")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        stage = f"generate_{path.parent.name}"
        raise DataError(f"{path} not found: run the {stage} stage first.")
    return json.loads(path.read_text())


if __name__ == "__main__":
    run_stage(main)
