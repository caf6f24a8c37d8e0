"""One-off, re-runnable: move cxrlab's modules into one package per pipeline part (issue 21).

Run from a clean checkout's root: python /work/regroup/regroup.py
It git-mv's the files and rewrites module paths in every tracked text file.
"""

import re
import subprocess
from pathlib import Path

MOVES = {
    # core
    "config": "core.config",
    "errors": "core.errors",
    "utils": "core.utils",
    "data.fetch": "core.fetch",
    "data.transforms": "core.transforms",
    "training.augment": "core.augment",
    "training.distributed": "core.runtime",
    "training.loop": "core.loop",
    "training.checkpoint": "core.checkpoint",
    "training.live": "core.live",
    "reporting.figures": "core.figures",
    # classification
    "data.pneumoniamnist": "classification.data",
    "models.classifier": "classification.model",
    "training.classifier": "classification.train",
    "evaluation.classification": "classification.evaluate",
    "evaluation.gradcam": "classification.gradcam",
    "evaluation.retrieval": "classification.retrieval",
    "reporting.classifier": "classification.figures",
    # segmentation
    "data.lungseg": "segmentation.data",
    "models.segmenter": "segmentation.model",
    "training.segmenter": "segmentation.train",
    "evaluation.segmentation": "segmentation.evaluate",
    "reporting.segmentation": "segmentation.figures",
    # cohort
    "data.cohort_db": "cohort.database",
    "evaluation.cohort": "cohort.analysis",
    "reporting.cohort": "cohort.figures",
    # labeling (CLIP)
    "models.clip": "labeling.model",
    "training.clip": "labeling.train",
    "data.labels": "labeling.labels",
    "evaluation.zero_shot": "labeling.zero_shot",
    # generation
    "data.imagefolder": "generation.imagefolder",
    "models.diffusion": "generation.model",
    "training.diffusion": "generation.train",
    "evaluation.generation": "generation.evaluate",
    "reporting.generation": "generation.figures",
    # captioning
    "data.captions": "captioning.data",
    "data.roco": "captioning.roco",
    "models.captioner": "captioning.model",
    "training.captioner": "captioning.train",
    "evaluation.captions": "captioning.evaluate",
    "evaluation.concepts": "captioning.concepts",
    "reporting.captioning": "captioning.figures",
    # report
    "reporting.report": "report.report",
    "reporting.html": "report.html",
}
PACKAGES = sorted({new.split(".")[0] for new in MOVES.values()})
OLD_PACKAGES = ["data", "models", "training", "evaluation", "reporting"]


def sh(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def main():
    src = Path("src/cxrlab")
    for pkg in PACKAGES:
        (src / pkg).mkdir(exist_ok=True)
        init = src / pkg / "__init__.py"
        if not init.exists():
            init.write_text("")
            sh("git", "add", str(init))
    for old, new in MOVES.items():
        sh(
            "git",
            "mv",
            str(src / (old.replace(".", "/") + ".py")),
            str(src / (new.replace(".", "/") + ".py")),
        )
    sh("git", "mv", str(src / "data" / "checksums"), str(src / "core" / "checksums"))
    for pkg in OLD_PACKAGES:
        for leftover in (src / pkg).glob("*.py"):
            if leftover.name == "__init__.py":
                sh("git", "rm", "-q", str(leftover))
    # longest first so "data.lungseg" wins over "data"
    pairs = sorted(MOVES.items(), key=lambda kv: -len(kv[0]))
    mod_re = [(re.compile(rf"\bcxrlab\.{re.escape(o)}\b"), f"cxrlab.{n}") for o, n in pairs]
    path_re = [
        (
            re.compile(rf"src/cxrlab/{re.escape(o.replace('.', '/'))}\.py\b"),
            f"src/cxrlab/{n.replace('.', '/')}.py",
        )
        for o, n in pairs
    ]
    # `from cxrlab.data import cohort_db` style
    from_re = [
        (
            re.compile(
                rf"from cxrlab\.{re.escape(o.rsplit('.', 1)[0])} import {re.escape(o.rsplit('.', 1)[1])}\b"
            ),
            f"from cxrlab.{n.rsplit('.', 1)[0]} import {n.rsplit('.', 1)[1]} as {o.rsplit('.', 1)[1]}",
        )
        for o, n in pairs
        if "." in o
    ]
    files = [
        f
        for f in sh("git", "ls-files").splitlines()
        if f.endswith((".py", ".yaml", ".yml", ".md", ".toml", ".cfg", ".txt", "Makefile"))
        and not f.startswith("requirements/")
    ]
    for f in files:
        p = Path(f)
        if not p.is_file():
            continue
        text = p.read_text()
        new = text
        for rx, rep in from_re + mod_re + path_re:
            new = rx.sub(rep, new)
        new = new.replace(
            '"cxrlab.data" = ["checksums/*.md5"]', '"cxrlab.core" = ["checksums/*.md5"]'
        )
        if new != text:
            p.write_text(new)
    print("moved", len(MOVES), "modules")


if __name__ == "__main__":
    main()
