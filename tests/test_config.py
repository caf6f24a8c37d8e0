from dataclasses import dataclass, field
from typing import Literal

import pytest

from cxrlab.config import from_dict, load_params
from cxrlab.errors import ConfigError
from cxrlab.params import SECTIONS, load_section
from tests.conftest import REPO


@dataclass(frozen=True)
class Inner:
    rate: float = 0.1
    mode: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class Outer:
    name: str
    steps: int = 1
    tags: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)


def test_builds_nested_dataclasses_and_coerces_int_to_float():
    cfg = from_dict(Outer, {"name": "x", "steps": 3, "tags": ["t"], "inner": {"rate": 1}})
    assert cfg == Outer(name="x", steps=3, tags=["t"], inner=Inner(rate=1.0))
    assert isinstance(cfg.inner.rate, float)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "stpes": 3}, "unknown param 'lora.stpes'"),
        ({"name": "x", "inner": {"rte": 1}}, "unknown param 'lora.inner.rte'"),
        ({"name": "x", "steps": "ten"}, "'lora.steps' must be of type int"),
        ({"name": "x", "steps": True}, "'lora.steps' must be an integer"),
        ({"name": "x", "inner": {"mode": "c"}}, "'lora.inner.mode' = 'c' must be one of"),
        ({"name": "x", "tags": "t"}, "'lora.tags' must be a list"),
        ({"steps": 2}, "'lora.name' is required"),
        ([1, 2], "'lora' must be a mapping"),
    ],
)
def test_rejects_bad_params_naming_the_key(data, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_dict(Outer, data, where="lora")


def test_every_section_of_the_repo_params_loads():
    params = load_params(REPO / "params.yaml")
    for name in SECTIONS:
        assert name in params
        load_section(name, REPO / "params.yaml")


def test_missing_params_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "params.yaml")
