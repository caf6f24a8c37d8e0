import pytest
import torch

from cxrlab.classification.config import ClassifierConfig
from cxrlab.classification.model import build_classifier, embed, load_classifier, predict_proba
from cxrlab.core.checkpoint import save_model
from cxrlab.core.errors import ConfigError, DataError


def test_forward_and_features_shapes(tiny_model_cfg):
    model = build_classifier(tiny_model_cfg).eval()
    x = torch.randn(5, 1, 28, 28)
    assert model(x).shape == (5, 2)
    assert model.features(x).shape == (5, 8 * 8)  # width 8 -> layer4 has 64 channels
    prob = predict_proba(model, x, batch_size=2)
    assert prob.shape == (5,) and torch.all((prob >= 0) & (prob <= 1))
    assert embed(model, x, batch_size=2).shape == (5, 64)


def test_width_scales_the_parameter_count():
    small = sum(p.numel() for p in build_classifier(ClassifierConfig(width=16)).parameters())
    full = sum(p.numel() for p in build_classifier(ClassifierConfig(width=64)).parameters())
    assert 14 < full / small < 18  # parameters grow with width squared
    assert 11_000_000 < full < 11_300_000  # a real ResNet-18 (1-channel stem)


def test_imagenet_stem_downsamples_224_inputs():
    model = build_classifier(ClassifierConfig(width=8, stem="imagenet")).eval()
    assert model(torch.randn(1, 1, 224, 224)).shape == (1, 2)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [({"arch": "vgg"}, "unknown classifier arch"), ({"width": 12}, "multiple of 8")],
)
def test_bad_configs(cfg, message):
    with pytest.raises(ConfigError, match=message):
        build_classifier(ClassifierConfig(**cfg))


def test_save_load_round_trip_gives_identical_outputs(tmp_path, tiny_model_cfg):
    from dataclasses import asdict

    model = build_classifier(tiny_model_cfg).eval()
    save_model(tmp_path / "m", model, {"model": asdict(tiny_model_cfg), "image_size": 28})
    loaded, meta = load_classifier(tmp_path / "m")
    x = torch.randn(3, 1, 28, 28)
    assert meta["image_size"] == 28
    assert torch.equal(model(x), loaded(x))


def test_loading_a_missing_or_mismatched_model_is_clear(tmp_path, tiny_model_cfg):
    from dataclasses import asdict

    with pytest.raises(DataError, match="model.safetensors not found"):
        load_classifier(tmp_path / "absent")
    model = build_classifier(tiny_model_cfg)
    wrong = asdict(ClassifierConfig(width=16))
    save_model(tmp_path / "m", model, {"model": wrong, "image_size": 28})
    with pytest.raises(DataError, match="weights do not match its config.json"):
        load_classifier(tmp_path / "m")
