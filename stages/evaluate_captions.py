"""Stage evaluate_captions: caption metrics, two baselines, and concept detection.

Scores the test captions caption_images wrote against their references (BLEU-1..4,
METEOR, ROUGE-L, CIDEr; ROUGE-1/2/L F), next to two baselines on the same images:
the most frequent training caption, and the caption of the nearest training image
(cosine on the captioner's mean-pooled image features). Concepts are mapped to
UMLS CUIs in generated and reference captions alike and scored with the ImageCLEF
concept F1; both ImageCLEF CSV formats are written.

Inputs:  ``captioning.paths.{predictions,data,model,mapper}``; ``captioning.evaluate``.
Outputs: ``captioning.paths.eval_live`` (dvclive); ``captioning.paths.concepts`` (CSVs);
         ``paths.figures.examples`` (test images spread over the split), ``paths.figures.scores``.
"""

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from cxrlab.captioning.concepts import ConceptMapper, write_concept_csvs
from cxrlab.captioning.data import load_caption_data, split_of
from cxrlab.captioning.evaluate import (
    CaptionScorer,
    most_frequent_caption,
    nearest_train_captions,
    score_systems,
)
from cxrlab.captioning.figures import caption_examples_figure, caption_scores_figure
from cxrlab.captioning.model import image_embeddings, load_captioner, pixel_values
from cxrlab.core.errors import DataError
from cxrlab.core.live import write_metrics
from cxrlab.params import load_section
from cxrlab.stage import run_stage

log = logging.getLogger("evaluate_captions")
HEADLINE = ("bleu_4", "rouge_l", "cider", "meteor")


def main() -> None:
    """Score the model and the baselines; write metrics, CSVs and figures."""
    params = load_section("captioning")
    paths = params.paths
    pairs, images = load_caption_data(paths.data)
    if not Path(paths.predictions).is_file():
        raise DataError(f"{paths.predictions} not found: run the caption_images stage first.")
    pred = pd.read_csv(paths.predictions, keep_default_na=False)
    (train_images, train_caps), (test_images, _) = (
        split_of(pairs, images, s) for s in ("train", "test")
    )
    if list(pred["image"]) != list(pairs.loc[pairs["split"] == "test", "image"]):
        raise DataError(f"{paths.predictions} does not list the test images: rerun caption_images.")
    captioner = load_captioner(paths.model)
    embed = lambda x: image_embeddings(captioner, pixel_values(captioner, x)).numpy()  # noqa: E731
    systems = {
        "model": pred["generated"].tolist(),
        "baseline_most_frequent": [most_frequent_caption(train_caps)] * len(pred),
        "baseline_nearest_image": nearest_train_captions(
            embed(train_images), train_caps, embed(test_images)
        ),
    }
    mapper = ConceptMapper.load(paths.mapper)
    scorer = CaptionScorer(meteor=params.evaluate.meteor)
    scores = score_systems(pred["reference"].tolist(), systems, mapper, scorer)
    for name, row in scores.items():
        log.info("%s: %s", name, ", ".join(f"{k} {row[k]:.4f}" for k in HEADLINE if k in row))
    write_metrics(paths.eval_live, scores | {"test_images": len(pred)})
    generated = _write_concepts(pred, systems["model"], mapper, Path(paths.concepts))
    picks = np.linspace(0, len(pred) - 1, params.evaluate.examples).round().astype(int)
    caption_examples_figure(
        test_images[picks], pred["reference"][picks].tolist(),
        [systems["model"][i] for i in picks],
        ["; ".join(dict.fromkeys(mapper.name(c) for c in generated[i])) for i in picks],
        paths.figures.examples,
    )  # fmt: skip
    keys = [k for k in (*HEADLINE, "concept_f1") if k in scores["model"]]
    caption_scores_figure({s: scores[s] for s in systems}, keys, paths.figures.scores)


def _write_concepts(pred: pd.DataFrame, captions: list[str], mapper, out: Path) -> list:
    """The concepts of the generated and the reference captions as CSVs; the generated."""
    out.mkdir(parents=True, exist_ok=True)
    generated = [mapper(t) for t in captions]
    write_concept_csvs(pred["image"].tolist(), generated, mapper, out / "generated")
    reference = [mapper(t) for t in pred["reference"]]
    write_concept_csvs(pred["image"].tolist(), reference, mapper, out / "reference")
    return generated


if __name__ == "__main__":
    run_stage(main)
