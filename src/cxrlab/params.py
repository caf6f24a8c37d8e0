"""The schema of params.yaml: one dataclass per section, checked on load.

Stages call :func:`load_section`, so an unknown or mistyped key (also one given
with ``dvc exp run -S``) stops the stage with the key's dotted name.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from cxrlab.captioning.concepts import MapperConfig
from cxrlab.captioning.data import CaptionDataConfig
from cxrlab.core.config import PARAMS_FILE, load_params, section
from cxrlab.core.errors import ConfigError
from cxrlab.segmentation.data import PrepareConfig

if TYPE_CHECKING:
    from cxrlab.captioning.model import CaptionerConfig
    from cxrlab.captioning.train import CaptionTrainConfig
    from cxrlab.classification.model import ClassifierConfig
    from cxrlab.classification.train import TrainConfig
    from cxrlab.generation.model import DiffusionConfig
    from cxrlab.generation.train import (
        BaseTrainConfig,
        LcmTrainConfig,
        VaeTrainConfig,
    )
    from cxrlab.labeling.model import ClipArchConfig
    from cxrlab.labeling.train import ClipTrainConfig
    from cxrlab.segmentation.model import SegmenterConfig
    from cxrlab.segmentation.train import SegTrainConfig

T = TypeVar("T")

# The model and trainer configs live next to code that imports torch, transformers and
# diffusers (seconds). They are imported when a section that names them is loaded, so a
# stage without a model (fetch, cohort, captions text, report) starts without them.
_CONFIG_MODULES = {
    "CaptionerConfig": "cxrlab.captioning.model",
    "ClassifierConfig": "cxrlab.classification.model",
    "ClipArchConfig": "cxrlab.labeling.model",
    "DiffusionConfig": "cxrlab.generation.model",
    "SegmenterConfig": "cxrlab.segmentation.model",
    "CaptionTrainConfig": "cxrlab.captioning.train",
    "TrainConfig": "cxrlab.classification.train",
    "ClipTrainConfig": "cxrlab.labeling.train",
    "BaseTrainConfig": "cxrlab.generation.train",
    "LcmTrainConfig": "cxrlab.generation.train",
    "LoraTrainConfig": "cxrlab.generation.train",
    "VaeTrainConfig": "cxrlab.generation.train",
    "SegTrainConfig": "cxrlab.segmentation.train",
}


class _Configs(dict):
    """Config classes by name, each imported on first lookup (type hints, defaults)."""

    def __missing__(self, name: str) -> type:
        if name not in _CONFIG_MODULES:
            raise KeyError(name)
        cls = self[name] = getattr(importlib.import_module(_CONFIG_MODULES[name]), name)
        return cls


CONFIGS = _Configs()


def _default(name: str):
    """``default_factory`` for a config imported on first use."""
    return lambda: CONFIGS[name]()


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
    model: ClassifierConfig = field(default_factory=_default("ClassifierConfig"))
    train: TrainConfig = field(default_factory=_default("TrainConfig"))
    eval: ClassifierEval = field(default_factory=ClassifierEval)
    retrieval: ClassifierRetrieval = field(default_factory=ClassifierRetrieval)


@dataclass(frozen=True)
class ClipPaths:
    """``clip.paths``: files shared by the CLIP stages and dvc.yaml."""

    data: str
    model: str
    checkpoint: str
    labels: str
    subset: str
    train_live: str
    label_live: str
    figures: str


@dataclass(frozen=True)
class ClipLabel:
    """``clip.label``: prompt ensembles and calibration (on val only)."""

    prompts: dict[str, list[str]] = field(default_factory=dict)
    calibrate: bool = True
    threshold_method: Literal["youden", "f1", "accuracy"] = "youden"
    ece_bins: int = 15


@dataclass(frozen=True)
class ClipSubset:
    """``clip.subset``: the balanced imagefolder export for the diffusion LoRA."""

    split: Literal["train", "val", "test"] = "train"
    per_class: int = 100
    label_source: Literal["ground_truth", "auto"] = "ground_truth"
    min_confidence: float = 0.9
    seed: int = 0
    text: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClipParams:
    """``clip``: CLIP training, auto-labelling and the balanced subset export."""

    paths: ClipPaths
    model_id: str
    arch: ClipArchConfig = field(default_factory=_default("ClipArchConfig"))
    train: ClipTrainConfig = field(default_factory=_default("ClipTrainConfig"))
    label: ClipLabel = field(default_factory=ClipLabel)
    subset: ClipSubset = field(default_factory=ClipSubset)


@dataclass(frozen=True)
class SegmentationPaths:
    """``segmentation.paths``: files shared by the segmentation stages and dvc.yaml."""

    raw: str
    nih: str
    prepared: str
    model: str
    checkpoint: str
    prepare_metrics: str
    train_live: str
    eval_live: str
    per_image: str
    nih_measurements: str
    figures: str


@dataclass(frozen=True)
class Postprocess:
    """``segmentation.eval.postprocess``: clean-up of predicted masks."""

    keep: int = 2
    fill_holes: bool = True


@dataclass(frozen=True)
class SegmentationEval:
    """``segmentation.eval``: thresholding, post-processing, subgroups and figures."""

    threshold: float = 0.5
    postprocess: Postprocess = field(default_factory=Postprocess)
    age_bands: list[int] = field(default_factory=lambda: [40, 60])
    overlay_cases: int = 3


@dataclass(frozen=True)
class SegmentationParams:
    """``segmentation``: lung segmentation on covid_lungseg."""

    paths: SegmentationPaths
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    model: SegmenterConfig = field(default_factory=_default("SegmenterConfig"))
    train: SegTrainConfig = field(default_factory=_default("SegTrainConfig"))
    eval: SegmentationEval = field(default_factory=SegmentationEval)


@dataclass(frozen=True)
class CohortPaths:
    """``cohort.paths``: the database's sources and outputs."""

    sources: dict[str, str]
    database: str
    build_metrics: str
    analysis_metrics: str
    figures: str
    summary: str


@dataclass(frozen=True)
class CohortAnalysis:
    """``cohort.analysis``: what the analysis stage groups and tests."""

    top_findings: int = 8
    cardiomegaly_finding: str = "cardiomegaly"


@dataclass(frozen=True)
class CohortParams:
    """``cohort``: the cohort database and its analysis."""

    paths: CohortPaths
    analysis: CohortAnalysis = field(default_factory=CohortAnalysis)


@dataclass(frozen=True)
class DiffusionPaths:
    """``diffusion.paths``: inputs, models and outputs of the generation stages."""

    data: str
    subset: str
    classifier: str
    vae: str
    base: str
    lcm_lora: str
    lora: str
    checkpoints: str
    generated: str
    live: str
    metrics: str
    figures: str


@dataclass(frozen=True)
class SamplerParams:
    """``diffusion.generate.samplers.<name>``: denoising steps and guidance."""

    steps: int
    guidance_scale: float = 1.0


@dataclass(frozen=True)
class GenerateParams:
    """``diffusion.generate``: how many images per prompt and variant, and the samplers."""

    seed: int = 0
    per_prompt: int = 250
    batch_size: int = 125
    grid_columns: int = 10
    lora_scale: float = 1.0
    vae_slicing: bool = False  # decode one image at a time (less memory at 512 px)
    samplers: dict[str, SamplerParams] = field(default_factory=dict)


@dataclass(frozen=True)
class DiffusionParams:
    """``diffusion``: the Stable Diffusion base, its LCM-LoRA, generation and scoring."""

    paths: DiffusionPaths
    pretrained: str | None = None
    model: DiffusionConfig = field(default_factory=_default("DiffusionConfig"))
    vae_train: VaeTrainConfig = field(default_factory=_default("VaeTrainConfig"))
    base_train: BaseTrainConfig = field(default_factory=_default("BaseTrainConfig"))
    lcm: LcmTrainConfig = field(default_factory=_default("LcmTrainConfig"))
    generate: GenerateParams = field(default_factory=GenerateParams)


@dataclass(frozen=True)
class CaptioningPaths:
    """``captioning.paths``: inputs, models and outputs of the captioning stages."""

    roco: str
    covid: str
    nih: str
    data: str
    mapper: str
    model: str
    checkpoints: str
    predictions: str
    concepts: str
    live: str
    metrics: str
    mapper_metrics: str
    inference_metrics: str
    figures: str


@dataclass(frozen=True)
class DecodeParams:
    """``captioning.decode``: beam search for test inference."""

    num_beams: int = 3
    max_new_tokens: int = 64
    no_repeat_ngram_size: int = 3
    batch_size: int = 8


@dataclass(frozen=True)
class CaptionEvalParams:
    """``captioning.evaluate``: what the evaluation computes and shows."""

    meteor: bool = True
    examples: int = 8


@dataclass(frozen=True)
class CaptioningParams:
    """``captioning``: caption data, the captioner, decoding, concepts and scoring."""

    paths: CaptioningPaths
    prepare: CaptionDataConfig = field(default_factory=CaptionDataConfig)
    model: CaptionerConfig = field(default_factory=_default("CaptionerConfig"))
    train: CaptionTrainConfig = field(default_factory=_default("CaptionTrainConfig"))
    decode: DecodeParams = field(default_factory=DecodeParams)
    concepts: MapperConfig = field(default_factory=MapperConfig)
    evaluate: CaptionEvalParams = field(default_factory=CaptionEvalParams)


@dataclass(frozen=True)
class ReportPaths:
    """``report.paths``: what the report stage writes."""

    summary: str
    html: str
    headline: str
    figures: str


@dataclass(frozen=True)
class ReportParams:
    """``report``: the pipeline summary and the HTML report."""

    paths: ReportPaths
    title: str = "cxrlab pipeline report"


SECTIONS: dict[str, type | str] = {  # a str names a class in CONFIGS
    "fetch": FetchParams,
    "classifier": ClassifierParams,
    "clip": ClipParams,
    "segmentation": SegmentationParams,
    "cohort": CohortParams,
    "diffusion": DiffusionParams,
    "lora": "LoraTrainConfig",  # the section is the trainer config itself
    "captioning": CaptioningParams,
    "report": ReportParams,
}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it, mappings merged key by key."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_profile(params: dict[str, Any]) -> dict[str, Any]:
    """The params with the active profile's overrides merged in.

    ``profile: cpu`` (the default) is params.yaml as written. Any other profile names a
    mapping under ``profiles`` whose sections are laid over the top-level ones, e.g.
    ``profiles.gpu.captioning.model.pretrained``, or replace a top-level setting such as
    ``device``. A profile with ``extends: <other>`` is that profile with its own overrides
    laid over it (``gpu-llava`` is ``gpu`` with the LLaVA captioner). A profile cannot
    change ``paths``: dvc.yaml reads them from the top-level sections.

    Raises:
        ConfigError: For an unknown profile, an ``extends`` loop, or an override of a
            ``paths`` key.
    """
    name = params.get("profile", "cpu")
    profiles = params.get("profiles") or {}
    if name == "cpu" and name not in profiles:
        return params
    if name not in profiles:
        known = ", ".join(["cpu", *profiles])
        raise ConfigError(f"unknown profile '{name}'; params.yaml defines: {known}.")
    chain = [name]
    while "extends" in (profiles[chain[-1]] or {}):
        base = profiles[chain[-1]]["extends"]
        if base in chain or base not in profiles:
            raise ConfigError(f"profiles.{chain[-1]}.extends: '{base}' is not another profile.")
        chain.append(base)
    out = dict(params)
    for step in reversed(chain):
        out = _lay_profile(out, step, profiles[step] or {})
    return out


def _lay_profile(params: dict[str, Any], name: str, profile: dict[str, Any]) -> dict[str, Any]:
    """``params`` with one profile's overrides laid over its sections (see apply_profile)."""
    out = dict(params)
    for key, override in profile.items():
        if key == "extends":
            continue
        if key in ("profile", "profiles") or key not in params:
            raise ConfigError(f"profiles.{name}.{key} must override a section of params.yaml.")
        if not isinstance(override, dict):  # a top-level setting such as `device`
            if isinstance(params[key], dict):
                raise ConfigError(f"profiles.{name}.{key} must be a mapping, like the section.")
            out[key] = override
            continue
        if "paths" in override:
            raise ConfigError(
                f"profiles.{name}.{key}.paths: a profile cannot move paths, "
                "because dvc.yaml reads them from the top-level sections."
            )
        out[key] = merge(params[key], override)
    return out


def parse_section(params: dict[str, Any], name: str) -> Any:
    """Check one section (a key of SECTIONS) of a params mapping, profile applied."""
    cls = SECTIONS[name]
    cls = CONFIGS[cls] if isinstance(cls, str) else cls
    return section(apply_profile(params), name, cls, names=CONFIGS)


def load_section(name: str, path: str | Path = PARAMS_FILE) -> T:
    """Load and check one section of params.yaml by its name (a key of SECTIONS).

    The active profile's overrides (see :func:`apply_profile`) are applied first.
    """
    return parse_section(load_params(path), name)
