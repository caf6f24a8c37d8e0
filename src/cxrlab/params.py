"""The schema of params.yaml: one dataclass per section, checked on load.

Stages call :func:`load_section`, so an unknown or mistyped key (also one given
with ``dvc exp run -S``) stops the stage with the key's dotted name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from cxrlab.config import PARAMS_FILE, load_params, section
from cxrlab.models.classifier import ClassifierConfig
from cxrlab.training.classifier import TrainConfig

T = TypeVar("T")


@dataclass(frozen=True)
class FetchParams:
    """``fetch``: where raw data comes from and goes to."""

    mirrors: list[str] = field(default_factory=list)
    allow_upstream: bool = True
    raw_dir: str = "data/raw"
    datasets: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ClassifierPaths:
    """``classifier.paths``: files shared by the classifier stages and dvc.yaml."""

    data: str
    model: str
    checkpoint: str
    train_live: str
    eval_live: str
    retrieval_live: str
    figures: str


@dataclass(frozen=True)
class ClassifierEval:
    """``classifier.eval``: thresholding and figures."""

    threshold_method: Literal["youden", "f1", "accuracy"] = "youden"
    gradcam_per_group: int = 6
    failures: int = 24


@dataclass(frozen=True)
class ClassifierRetrieval:
    """``classifier.retrieval``: precision@k cut-offs and the gallery's size."""

    ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    gallery_queries: int = 8
    gallery_neighbours: int = 5


@dataclass(frozen=True)
class ClassifierParams:
    """``classifier``: the PneumoniaMNIST classifier's stages."""

    paths: ClassifierPaths
    model: ClassifierConfig = field(default_factory=ClassifierConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: ClassifierEval = field(default_factory=ClassifierEval)
    retrieval: ClassifierRetrieval = field(default_factory=ClassifierRetrieval)


SECTIONS = {"fetch": FetchParams, "classifier": ClassifierParams}


def load_section(name: str, path: str | Path = PARAMS_FILE) -> T:
    """Load and check one section of params.yaml by its name (a key of SECTIONS)."""
    return section(load_params(path), name, SECTIONS[name])
