"""Stage report: the pipeline summary, the headline metrics and a self-contained HTML report.

Inputs:  every stage's metrics files and figures (listed in dvc.yaml), dvc.yaml itself,
         and all of params.yaml (the active profile applied).
Outputs: ``report.paths.summary`` (every artifact path per stage, the params, the headline
         metrics, the Python and package versions the pipeline ran with);
         ``report.paths.headline_live`` (dvclive: the numbers to compare across experiments);
         ``report.paths.html`` (figures embedded, opens offline); ROC and confusion
         figures under ``report.paths.figures``.
"""

import json
import logging
from pathlib import Path

import yaml

from cxrlab.core.config import load_params
from cxrlab.core.figures import plot_confusion_matrices
from cxrlab.core.live import write_metrics
from cxrlab.core.utils import atomic_path, write_json
from cxrlab.params import apply_profile, load_section
from cxrlab.report.html import Section, report_page
from cxrlab.report.report import (
    environment,
    figure_paths,
    headline_metrics,
    metrics_file,
    pipeline_outputs,
    roc_figure,
)
from cxrlab.stage import run_stage

log = logging.getLogger("report")


def classifier_figures(params: dict, figures) -> None:
    """The test ROC and the confusion at the val-chosen threshold, from evaluate_classifier."""
    live = Path(params["classifier"]["paths"]["eval_live"])
    scores = json.loads(metrics_file(str(live)).read_text())
    roc = json.loads((live / "plots/sklearn/test/roc.json").read_text())["roc"]
    roc_figure(roc, scores["test"]["auc"], figures.classifier_roc)
    counts = {"test, val threshold": scores["test_at_val_threshold"]}
    plot_confusion_matrices(counts, ["normal", "pneumonia"], figures.classifier_confusion)


def main() -> None:
    """Collect artifacts, params and metrics; draw the missing figures; write the report."""
    cfg = load_section("report")
    params = apply_profile(load_params())
    params.pop("profiles", None)
    classifier_figures(params, cfg.paths.figures)

    outputs = pipeline_outputs(yaml.safe_load(Path("dvc.yaml").read_text()), params)
    upstream = [p for stage, paths in outputs.items() if stage != "report" for p in paths]
    missing = [p for p in upstream if not Path(p).exists()]
    headline = headline_metrics(params)
    summary = {"profile": params["profile"], "headline": headline, "artifacts": outputs}
    env = environment()
    summary |= {"environment": env, "missing_artifacts": missing, "params": params}
    write_metrics(cfg.paths.headline_live, headline)
    write_json(cfg.paths.summary, summary)

    sections: dict[str, Section] = {}
    for name, caption, path in figure_paths(params):
        sections.setdefault(name, Section(name, {}, [])).figures.append((caption, path))
    groups = {"Classification": ["classifier"], "Segmentation": ["segmentation"]}
    groups |= {"CLIP labels": ["clip_labels"], "Captioning": ["captioning", "concept_mapper"]}
    groups |= {"Generation": ["generation"]}
    for name, keys in groups.items():
        sections[name].tables["Headline metrics"] = {k: headline[k] for k in keys}
    versions = {name: {"version": v} for name, v in env["packages"].items()}
    sections["Environment"] = Section(f"Environment (Python {env['python']})", {
        "Package versions": versions}, [])  # fmt: skip
    intro = (
        f"Profile: {params['profile']}. {sum(map(len, outputs.values()))} artifacts from "
        f"{len(outputs)} stages; the JSON summary is at the end and in {cfg.paths.summary}."
    )
    with atomic_path(cfg.paths.html) as tmp:
        tmp.write_text(report_page(cfg.title, intro, list(sections.values()), summary))
    log.info(
        "wrote %s (%d sections); %d missing artifacts", cfg.paths.html, len(sections), len(missing)
    )


if __name__ == "__main__":
    run_stage(main)
