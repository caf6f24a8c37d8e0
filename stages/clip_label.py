"""Stage clip_label: prompt-ensemble auto-labels for every PneumoniaMNIST image.

Temperature and threshold are fitted on val only; metrics are reported per split and
overall, always with the confusion counts (a labeller that calls everything pneumonia
shows TN = 0). ``argmax_*`` score each image as the class whose prompts are nearer, with
no PneumoniaMNIST label used at all.

Inputs:  the CLIP named by ``clip.model_id`` (``local-dir:`` the trained one, or a hub id);
         ``clip.paths.data``; params ``clip.model_id``, ``clip.label``.
Outputs: ``clip.paths.labels`` (image_id, split, auto_label, ground_truth, confidence_score);
         ``clip.paths.label_live`` (dvclive metrics and confusion plots);
         ``clip.paths.figures.confusion``.
"""

import logging

import numpy as np
from dvclive import Live

from cxrlab.classification.data import CLASS_NAMES, load_pneumoniamnist
from cxrlab.classification.evaluate import binary_metrics, expected_calibration_error
from cxrlab.core.figures import plot_confusion_matrices
from cxrlab.core.utils import seed_everything
from cxrlab.labeling.labels import write_labels
from cxrlab.labeling.model import load_clip
from cxrlab.labeling.zero_shot import binary_logit, calibrate_and_label, class_embeddings
from cxrlab.params import load_section
from cxrlab.stage import run_stage

log = logging.getLogger("clip_label")


def main() -> None:
    """Label all splits, score them against the ground truth, and write the table."""
    params = load_section("clip")
    cfg, paths = params.label, params.paths
    seed_everything(0)
    splits = load_pneumoniamnist(paths.data)
    bundle = load_clip(params.model_id)
    text = class_embeddings(bundle, cfg.prompts, list(CLASS_NAMES))
    margins = {
        s: binary_logit(bundle.encode_images(bundle.images_to_tensor(d.images)), text)
        for s, d in splits.items()
    }
    labels = {s: d.labels for s, d in splits.items()}
    prob, scale, threshold = calibrate_and_label(
        margins, labels["val"], cfg.calibrate, cfg.threshold_method
    )
    rows = write_labels(paths.labels, labels, prob, threshold, CLASS_NAMES)
    log.info("labelled %d images (scale %.2f, threshold %.3f) into %s",
             rows, scale, threshold, paths.labels)  # fmt: skip
    labels["overall"] = np.concatenate(list(labels.values()))
    prob["overall"] = np.concatenate(list(prob.values()))
    with Live(dir=paths.label_live, dvcyaml=False, save_dvc_exp=False) as live:
        live.log_metric("scale", scale, plot=False)
        live.log_metric("threshold", threshold, plot=False)
        counts = {
            s: _log_split(live, s, y, prob[s], threshold, cfg.ece_bins) for s, y in labels.items()
        }
    title = (
        f"CLIP auto-labels vs ground truth ({params.model_id}, threshold {threshold:.2f} from val)"
    )
    plot_confusion_matrices(counts, CLASS_NAMES, paths.figures.confusion, title)


def _log_split(live, split: str, y, prob, threshold: float, ece_bins: int) -> dict:
    """One split's metrics, ECE and confusion matrix into ``live``; the metrics."""
    metrics = binary_metrics(y, prob, threshold)
    metrics["ece"] = expected_calibration_error(y, prob, ece_bins)
    # The nearer class's prompts (margin >= 0, whatever the scale): no label used at all.
    nearer = binary_metrics(y, prob, 0.5)
    metrics |= {f"argmax_{k}": nearer[k] for k in ("accuracy", "balanced_accuracy", "tn", "tp")}
    for key, value in metrics.items():
        live.log_metric(f"{split}/{key}", value, plot=False)
    pred = (prob >= threshold).astype(int)
    live.log_sklearn_plot("confusion_matrix", y, pred, name=f"{split}/confusion_matrix.json")
    shown = ("accuracy", "balanced_accuracy", "auc", "tn", "fp", "fn", "tp")
    log.info("%s: accuracy %.4f, balanced %.4f, AUC %.4f, TN %d FP %d FN %d TP %d",
             split, *(metrics[k] for k in shown))  # fmt: skip
    return metrics


if __name__ == "__main__":
    run_stage(main)
