"""The pipeline report: every artifact, the params, the headline metrics, the key figures.

:func:`pipeline_outputs` resolves dvc.yaml's ``${...}`` paths and ``foreach`` stages the
way DVC does for this project's files; :data:`HEADLINE` names the numbers people compare
across experiments (``metrics/headline/metrics.json``); :data:`FIGURES` lists the figures the
HTML report shows, by the params key of each figure's file.
"""

from __future__ import annotations

import json
import platform
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from cxrlab.core.errors import DataError
from cxrlab.core.figures import plt, save_figure

PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")

# (group, name in the headline metrics, params key of the stage's dvclive folder, dotted key)
HEADLINE = [
    ("segmentation", "test_dice", "segmentation.paths.eval_live", "test.dice"),
    ("segmentation", "test_iou", "segmentation.paths.eval_live", "test.iou"),
    ("segmentation", "test_hd95_px", "segmentation.paths.eval_live", "test.hd95_px"),
    ("classifier", "test_accuracy", "classifier.paths.eval_live", "test_at_val_threshold.accuracy"),
    ("classifier", "test_f1", "classifier.paths.eval_live", "test_at_val_threshold.f1"),
    ("classifier", "test_auc", "classifier.paths.eval_live", "test.auc"),
    (
        "classifier",
        "test_retrieval_p_at_1",
        "classifier.paths.retrieval_live",
        "test.precision_at_1",
    ),
    ("clip_labels", "test_accuracy", "clip.paths.label_live", "test.accuracy"),
    ("clip_labels", "test_f1", "clip.paths.label_live", "test.f1"),
    ("clip_labels", "test_auc", "clip.paths.label_live", "test.auc"),
    ("captioning", "test_bleu_4", "captioning.paths.eval_live", "model.bleu_4"),
    ("captioning", "test_rouge_l", "captioning.paths.eval_live", "model.rouge_l"),
    ("captioning", "test_cider", "captioning.paths.eval_live", "model.cider"),
    ("captioning", "test_meteor", "captioning.paths.eval_live", "model.meteor"),
    ("captioning", "test_concept_f1", "captioning.paths.eval_live", "model.concept_f1"),
    ("captioning", "test_view_accuracy", "captioning.paths.eval_live", "model.view_accuracy"),
    (
        "captioning",
        "test_distinct_captions",
        "captioning.paths.eval_live",
        "model.distinct_captions",
    ),
    ("concept_mapper", "roco_test_f1", "captioning.paths.mapper_live", "roco_test_concept_f1"),
    ("generation", "lcm_base_domain_fid", "diffusion.paths.eval_live", "lcm.base.domain_fid"),
    ("generation", "lcm_lora_domain_fid", "diffusion.paths.eval_live", "lcm.lora.domain_fid"),
    (
        "generation",
        "lcm_base_class_agreement",
        "diffusion.paths.eval_live",
        "lcm.base.class_agreement",
    ),
    (
        "generation",
        "lcm_lora_class_agreement",
        "diffusion.paths.eval_live",
        "lcm.lora.class_agreement",
    ),
    (
        "generation",
        "lcm_speedup_over_ddim",
        "diffusion.paths.eval_live",
        "lcm_vs_ddim.speedup_base",
    ),
]

# (report section, caption, params key of the figure's file)
FIGURES = [
    ("Classification", "Training curves", "classifier.paths.figures.training_curves"),
    ("Classification", "Test ROC", "report.paths.figures.classifier_roc"),
    ("Classification", "Test confusion", "report.paths.figures.classifier_confusion"),
    ("Classification", "Grad-CAM", "classifier.paths.figures.gradcam"),
    ("Classification", "Retrieval", "classifier.paths.figures.retrieval"),
    ("Segmentation", "Training curves", "segmentation.paths.figures.training_curves"),
    ("Segmentation", "Test overlays", "segmentation.paths.figures.overlays"),
    ("Segmentation", "Dice by group", "segmentation.paths.figures.dice_by_group"),
    ("Cohort", "Demographics", "cohort.paths.figures.demographics"),
    ("Cohort", "Views and findings", "cohort.paths.figures.views_findings"),
    ("Cohort", "Cardiothoracic ratio", "cohort.paths.figures.ctr"),
    ("CLIP labels", "Confusion per split", "clip.paths.figures.confusion"),
    ("Captioning", "Examples", "captioning.paths.figures.examples"),
    ("Captioning", "Scores against the baselines", "captioning.paths.figures.scores"),
    ("Generation", "LCM, 4 steps: base and LoRA", "diffusion.paths.figures.lcm_grid"),
    ("Generation", "DDIM: base and LoRA", "diffusion.paths.figures.ddim_grid"),
    ("Generation", "Scores", "diffusion.paths.figures.scores"),
]


# The packages whose versions decide the pipeline's numbers, recorded in every summary.
PACKAGES = [
    "torch", "torchvision", "transformers", "diffusers", "peft", "open_clip_torch",
    "segmentation-models-pytorch", "timm", "accelerate", "dvc", "dvclive", "numpy",
    "scikit-learn",
]  # fmt: skip


def environment(packages: list[str] = PACKAGES) -> dict[str, Any]:
    """The Python version and the installed version of each of ``packages`` (None if absent)."""
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "packages": versions}


def lookup(tree: dict[str, Any], dotted: str, where: str = "params") -> Any:
    """``tree["a"]["b"]`` for ``"a.b"``.

    Raises:
        DataError: Naming the missing key and ``where`` it was looked up.
    """
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise DataError(f"{where} has no '{dotted}'.")
        node = node[part]
    return node


def interpolate(text: str, params: dict[str, Any], item: Any = None) -> str:
    """Replace ``${a.b}`` by the params value and ``${item}`` by ``item``."""

    def value(match: re.Match) -> str:
        key = match.group(1).strip()
        return str(item) if key == "item" else str(lookup(params, key))

    return PLACEHOLDER.sub(value, text)


def pipeline_outputs(dvc_yaml: dict[str, Any], params: dict[str, Any]) -> dict[str, list[str]]:
    """Every out, metric and plot path of every stage, with ``${...}`` resolved.

    ``foreach`` stages expand to ``name@item`` as in ``dvc stage list``.
    """
    result: dict[str, list[str]] = {}
    for name, stage in dvc_yaml["stages"].items():
        if "foreach" in stage:
            items = lookup(params, PLACEHOLDER.fullmatch(stage["foreach"]).group(1))
            expanded = [(f"{name}@{item}", stage["do"], item) for item in items]
        else:
            expanded = [(name, stage, None)]
        for full, body, item in expanded:
            paths = []
            for kind in ("outs", "metrics", "plots"):
                for entry in body.get(kind, []):
                    raw = next(iter(entry)) if isinstance(entry, dict) else entry
                    paths.append(interpolate(raw, params, item))
            result[full] = paths
    return result


def metrics_file(path: str) -> Path:
    """A stage's metrics file: its dvclive folder's ``metrics.json``."""
    return Path(path) / "metrics.json"


def headline_metrics(params: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The :data:`HEADLINE` numbers, grouped, read from the stages' metrics files.

    Raises:
        DataError: If a metrics file or key is missing (its stage has not run).
    """
    cache: dict[Path, dict] = {}
    out: dict[str, dict[str, float]] = {}
    for group, name, path_key, key in HEADLINE:
        path = metrics_file(lookup(params, path_key))
        if path not in cache:
            if not path.is_file():
                raise DataError(f"{path} not found: run the stage that writes it first.")
            cache[path] = json.loads(path.read_text())
        out.setdefault(group, {})[name] = float(lookup(cache[path], key, str(path)))
    return out


def figure_paths(params: dict[str, Any]) -> list[tuple[str, str, Path]]:
    """(section, caption, path) of every report figure, from :data:`FIGURES`."""
    return [(s, c, Path(lookup(params, key))) for s, c, key in FIGURES]


def roc_figure(roc: list[dict[str, float]], auc: float, path: str | Path) -> Path:
    """The ROC curve from dvclive's ``roc.json`` rows (fpr, tpr)."""
    fpr = np.array([r["fpr"] for r in roc])
    tpr = np.array([r["tpr"] for r in roc])
    fig, ax = plt.subplots(figsize=(3.6, 3.4))
    ax.plot(fpr, tpr, color="#2c7fb8", label=f"AUC {auc:.3f}")
    ax.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="Test ROC")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)
