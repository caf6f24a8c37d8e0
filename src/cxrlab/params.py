"""params.yaml's sections and profiles: each section is checked on load into its dataclass.

Stages call :func:`load_section`, so an unknown or mistyped key (also one given
with ``dvc exp run -S``) stops the stage with the key's dotted name.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, TypeVar

from cxrlab.core.config import PARAMS_FILE, load_params, merge, section
from cxrlab.core.errors import ConfigError

T = TypeVar("T")

# Each section's dataclass, as "module:class". The part's config module is imported only
# when its section is loaded, so a stage imports no other part's code.
SECTIONS: dict[str, str] = {
    "fetch": "cxrlab.core.fetch:FetchParams",
    "classifier": "cxrlab.classification.config:ClassifierParams",
    "clip": "cxrlab.labeling.config:ClipParams",
    "segmentation": "cxrlab.segmentation.config:SegmentationParams",
    "cohort": "cxrlab.cohort.config:CohortParams",
    "diffusion": "cxrlab.generation.config:DiffusionParams",
    "lora": "cxrlab.generation.config:LoraTrainConfig",  # the section is the trainer config
    "captioning": "cxrlab.captioning.config:CaptioningParams",
    "report": "cxrlab.report.config:ReportParams",
}


def section_class(name: str) -> type:
    """The dataclass of section ``name`` (a key of :data:`SECTIONS`)."""
    module, cls = SECTIONS[name].split(":")
    return getattr(importlib.import_module(module), cls)


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
    return section(apply_profile(params), name, section_class(name))


def load_section(name: str, path: str | Path = PARAMS_FILE) -> T:
    """Load and check one section of params.yaml by its name (a key of SECTIONS).

    The active profile's overrides (see :func:`apply_profile`) are applied first.
    """
    return parse_section(load_params(path), name)
