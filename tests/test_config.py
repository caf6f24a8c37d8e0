import subprocess
import sys
from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from cxrlab.core.config import from_dict, load_params
from cxrlab.core.errors import ConfigError
from cxrlab.params import SECTIONS, apply_profile, load_section, parse_section
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


def test_sections_without_a_model_load_without_torch():
    """fetch, cohort and report stages start in well under a second, not after torch."""
    code = (
        "import sys; from cxrlab.params import load_section\n"
        "for name in ('fetch', 'cohort', 'report'): load_section(name)\n"
        "print(sorted(m for m in ('torch', 'transformers', 'diffusers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_a_model_config_left_out_takes_its_defaults():
    params = load_params(REPO / "params.yaml")
    captioning = {k: v for k, v in params["captioning"].items() if k not in ("model", "train")}
    loaded = parse_section({**params, "captioning": captioning}, "captioning")
    from cxrlab.captioning.config import CaptionerConfig, CaptionTrainConfig

    assert loaded.model == CaptionerConfig() and loaded.train == CaptionTrainConfig()
    with pytest.raises(ConfigError, match="unknown param 'lora.stepz'"):
        parse_section({**params, "lora": {**params["lora"], "stepz": 1}}, "lora")


def test_every_trainer_reads_one_optim_block_and_a_partial_one_keeps_its_defaults():
    from cxrlab.core.config import OptimConfig
    from cxrlab.generation.config import LcmTrainConfig, LoraTrainConfig

    params = load_params(REPO / "params.yaml")
    lora = parse_section({**params, "lora": {"optim": {"lr": 0.02}}}, "lora")
    # lr from the block; the schedule and warm-up stay the LoRA trainer's, not OptimConfig's
    assert lora.optim == OptimConfig(lr=0.02, schedule="cosine", warmup_frac=0.05)
    assert LoraTrainConfig().optim.schedule != LcmTrainConfig().optim.schedule
    for section, where in (("lora", "lora"), ("classifier", "classifier.train")):
        bad = load_params(REPO / "params.yaml")
        block = bad[section] if section == "lora" else bad[section]["train"]
        block["optim"]["lr"] = 0.0
        with pytest.raises(ConfigError, match=f"'{where}.optim.lr' must be positive"):
            parse_section(bad, section)
        block["optim"] = {"lr": 0.1, "sched": "cosine"}
        with pytest.raises(ConfigError, match=f"unknown param '{where}.optim.sched'"):
            parse_section(bad, section)


def gpu_params(tmp_path):
    params = load_params(REPO / "params.yaml")
    params["profile"] = "gpu"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return params, path


def test_gpu_profile_switches_every_model_to_its_hub_id(tmp_path):
    params, path = gpu_params(tmp_path)
    for name in SECTIONS:  # every overridden section still passes the schema
        load_section(name, path)
    assert load_section("captioning", path).model.pretrained == (
        "Salesforce/blip-image-captioning-base"
    )
    assert load_section("clip", path).model_id.startswith("hf-hub:microsoft/BiomedCLIP")
    assert load_section("diffusion", path).lcm.pretrained == "latent-consistency/lcm-lora-sdv1-5"
    seg = load_section("segmentation", path)  # merged key by key: the rest stays
    assert (seg.model.encoder, seg.model.encoder_weights) == ("resnet18", "imagenet")
    assert seg.model.decoder_channels == params["segmentation"]["model"]["decoder_channels"]
    assert load_section("captioning", REPO / "params.yaml").model.pretrained is None
    samplers = load_section("diffusion", path).generate.samplers
    assert 1.0 <= samplers["lcm"].guidance_scale <= 2.0  # the LCM-LoRA model card's range
    assert samplers["lcm"].steps == params["diffusion"]["generate"]["samplers"]["lcm"]["steps"]


def test_gpu_llava_profile_is_the_gpu_profile_with_a_qlora_llava_captioner():
    params = load_params(REPO / "params.yaml")
    llava = apply_profile({**params, "profile": "gpu-llava"})
    gpu = apply_profile({**params, "profile": "gpu"})
    model, train = llava["captioning"]["model"], llava["captioning"]["train"]
    assert model["family"] == "llava" and model["load_in_4bit"] is True
    assert model["pretrained"] == "xtuner/llava-llama-3-8b-v1_1-transformers"
    assert train["finetune"] == "lora" and train["gradient_checkpointing"] is True
    assert train.get("lora_targets") is None  # the family's default: LLaMA's projections
    for section in ("clip", "diffusion", "segmentation", "classifier", "device"):
        assert llava[section] == gpu[section], section  # inherited from gpu
    assert {k: v for k, v in llava.items() if k != "captioning"} == {
        k: v for k, v in gpu.items() if k != "captioning"
    } | {"profile": "gpu-llava"}


def test_the_cpu_captioner_is_the_composed_llava_and_cpu_blip_the_blip_built_here():
    params = load_params(REPO / "params.yaml")
    cpu = parse_section(params, "captioning")
    assert (cpu.model.family, cpu.model.pretrained, cpu.train.finetune) == ("llava", None, "lora")
    assert cpu.model.vision.arch == "tf_efficientnet_lite0" and cpu.model.text.init == "pretrained"
    assert cpu.model.vision.weights.startswith(params["fetch"]["raw_dir"] + "/efficientnet_lite0/")
    assert cpu.model.text.weights.startswith(params["fetch"]["raw_dir"] + "/smollm2/")
    blip = parse_section({**params, "profile": "cpu-blip"}, "captioning")
    assert (blip.model.family, blip.model.vision.arch, blip.model.text.init) == (
        "blip", "vit", "minilm")  # fmt: skip
    assert blip.train.finetune == "full" and blip.train.lora_targets is None
    # bf16 where the CPU has it was measured for the LLaVA captioner only: BLIP keeps
    # the top-level precision
    assert (cpu.train.precision, blip.train.precision) == ("auto", None)
    gpu = parse_section({**params, "profile": "gpu"}, "captioning")
    assert gpu.model.family == "blip" and gpu.train.finetune == "full"
    model = {**params["captioning"]["model"], "family": "blip"}
    with pytest.raises(ConfigError, match="blip captioner built here has a ViT"):
        parse_section({**params, "captioning": {**params["captioning"], "model": model}},
                      "captioning")  # fmt: skip


def leaves(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from leaves(value, (*prefix, key))
        else:
            yield (*prefix, key)


def test_every_profile_override_reruns_the_stages_that_read_it():
    """An override no stage declares would switch models without dvc rerunning anything."""
    params = load_params(REPO / "params.yaml")
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    declared = {name: stage.get("params", []) for name, stage in stages.items()}
    for profile, sections in params["profiles"].items():
        sections = {k: v for k, v in sections.items() if k != "extends"}  # not a section
        for leaf in leaves(sections):
            dotted = ".".join(leaf)
            readers = [
                name
                for name, keys in declared.items()
                for key in keys
                if dotted == key or dotted.startswith(f"{key}.")
            ]
            assert readers, f"no stage reads {dotted}"
            for name in readers:
                keys = declared[name]
                assert "profile" in keys, name
                full = f"profiles.{profile}.{dotted}"
                assert any(full == k or full.startswith(f"{k}.") for k in keys), (name, full)


@pytest.mark.parametrize(
    ("profile", "override", "message"),
    [
        ("tpu", {}, "unknown profile 'tpu'; params.yaml defines: cpu, gpu"),
        ("gpu", {"captioning": {"paths": {"model": "x"}}}, "cannot move paths"),
        ("gpu", {"nosuch": {"a": 1}}, "profiles.gpu.nosuch must override a section"),
        ("gpu", {"extends": "gpu"}, "profiles.gpu.extends: 'gpu' is not another profile"),
    ],
)
def test_bad_profiles_are_clear_errors(profile, override, message):
    params = {"profile": profile, "captioning": {"paths": {}}, "profiles": {"gpu": override}}
    with pytest.raises(ConfigError, match=message):
        apply_profile(params)


def test_missing_params_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "params.yaml")
