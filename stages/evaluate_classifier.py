"""Stage evaluate_classifier: test metrics, ROC/PR/confusion plots, Grad-CAM and failures.

The decision threshold is chosen on val only; test metrics are reported both at 0.5
and at that threshold.

Inputs:  ``classifier.paths.model``, ``classifier.paths.data``; params ``classifier.eval``.
Outputs: ``classifier.paths.eval_live`` (dvclive: metrics.json, sklearn plots);
         ``classifier.paths.figures.{gradcam,failures}``.
"""

import logging

from dvclive import Live

from cxrlab.classification.data import load_pneumoniamnist
from cxrlab.classification.evaluate import binary_metrics, choose_threshold
from cxrlab.classification.figures import failure_gallery, gradcam_figure
from cxrlab.classification.model import load_classifier, predict_proba
from cxrlab.core.transforms import to_tensor
from cxrlab.core.utils import seed_everything
from cxrlab.params import load_section
from cxrlab.stage import run_stage

log = logging.getLogger("evaluate_classifier")


def main() -> None:
    """Evaluate the trained classifier on val (threshold) and test (metrics, figures)."""
    params = load_section("classifier")
    paths, cfg = params.paths, params.eval
    seed_everything(params.train.seed)
    model, meta = load_classifier(paths.model)
    splits = load_pneumoniamnist(paths.data)
    x = {name: to_tensor(split.images, meta["image_size"]) for name, split in splits.items()}
    prob = {name: predict_proba(model, x[name]).double().numpy() for name in ("val", "test")}
    val_threshold = choose_threshold(splits["val"].labels, prob["val"], cfg.threshold_method)
    y_test = splits["test"].labels

    with Live(dir=paths.eval_live, dvcyaml=False, save_dvc_exp=False) as live:
        live.log_metric("val_threshold", val_threshold, plot=False)
        for prefix, threshold in (("test", 0.5), ("test_at_val_threshold", val_threshold)):
            for key, value in binary_metrics(y_test, prob["test"], threshold).items():
                live.log_metric(f"{prefix}/{key}", value, plot=False)
        pred = (prob["test"] >= val_threshold).astype(int)
        live.log_sklearn_plot("confusion_matrix", y_test, pred, name="test/confusion_matrix.json")
        live.log_sklearn_plot("roc", y_test, prob["test"], name="test/roc.json")
        live.log_sklearn_plot(
            "precision_recall", y_test, prob["test"], name="test/precision_recall.json"
        )
        summary = live.summary

    log.info("test @0.5: %s", _short(summary["test"]))
    log.info(
        "test @val threshold %.3f: %s", val_threshold, _short(summary["test_at_val_threshold"])
    )
    figures, images = paths.figures, splits["test"].images
    gradcam_figure(model, images, x["test"], y_test, prob["test"], val_threshold,
                   cfg.gradcam_per_group, figures.gradcam)  # fmt: skip
    failure_gallery(images, y_test, prob["test"], val_threshold, cfg.failures,
                    figures.failures)  # fmt: skip


def _short(metrics: dict) -> str:
    return ", ".join(
        f"{k} {metrics[k]:.4f}" for k in ("accuracy", "auc", "f1", "balanced_accuracy")
    )


if __name__ == "__main__":
    run_stage(main)
