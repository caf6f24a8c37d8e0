import dataclasses
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from cxrlab.core.augment import AugmentConfig, augment_pair
from cxrlab.core.errors import ConfigError, DataError
from cxrlab.segmentation.config import (
    SegmentationEval,
    SegmenterConfig,
    SegTrainConfig,
    names_weight_file,
)
from cxrlab.segmentation.data import (
    IGNORE,
    encode_mask,
    read_index,
    read_pair,
    resize,
    screen,
    split_by_patient,
)
from cxrlab.segmentation.evaluate import (
    age_band,
    dice_score,
    hd95,
    iou_score,
    lung_measurements,
    postprocess,
)
from cxrlab.segmentation.model import (
    build_segmenter,
    full_size_predictor,
    full_size_probabilities,
    predict_full_size,
)
from cxrlab.segmentation.train import segmentation_loss, train_segmenter
from tests import tiny
from tests.conftest import assert_resume_gives_the_same_weights
from tests.lungseg_fixtures import write_covid


@pytest.fixture
def covid(tmp_path):
    return write_covid(tmp_path / "covid_lungseg")


def test_masks_are_coded_lung_background_ignore():
    raw = np.array([[0, 127, 255, 254]], np.uint8)
    assert encode_mask(raw).tolist() == [[0, IGNORE, 1, 1]]


def test_screen_keeps_good_pairs_and_reads_rgb_as_gray(covid):
    index = screen(read_index(covid), covid, 0.05)
    assert (index.status == "kept").all()
    image, mask = read_pair(covid / "images/img00.png", covid / "masks/img00_mask.png")
    assert image.ndim == 2 and image.dtype == np.uint8  # img00 was saved as RGB
    assert set(np.unique(mask)) == {0, 1, IGNORE}


def test_screen_drops_size_mismatch_and_near_empty_masks_by_name(covid, caplog):
    from PIL import Image

    Image.fromarray(np.zeros((10, 10), np.uint8)).save(covid / "masks/img01_mask.png")
    empty = np.zeros((64, 64), np.uint8)
    empty[:2, :2] = 255
    Image.fromarray(empty).save(covid / "masks/img02_mask.png")
    with caplog.at_level(logging.WARNING):
        index = screen(read_index(covid), covid, 0.05)
    dropped = index[index.status == "dropped"].set_index("image").reason
    assert dropped.to_dict() == {
        "img01.png": "mask and image sizes differ",
        "img02.png": "near-empty mask (0.1% lung < 5.0%)",
    }
    assert "img01.png" in caplog.text and "img02.png" in caplog.text


def test_a_mask_of_the_wrong_size_is_a_clear_error(covid):
    from PIL import Image

    Image.fromarray(np.zeros((10, 12), np.uint8)).save(covid / "masks/img00_mask.png")
    with pytest.raises(DataError, match=r"img00_mask.png is 12x10 but its image .* is 64x64"):
        read_pair(covid / "images/img00.png", covid / "masks/img00_mask.png")


def test_a_non_image_file_stops_screening_with_its_name(covid):
    (covid / "images/img03.png").write_text("not a png")
    with pytest.raises(DataError, match="img03.png is not a readable image"):
        screen(read_index(covid), covid, 0.05)


def test_a_missing_index_column_is_named(covid):
    pd.read_csv(covid / "index.csv").drop(columns=["patientid"]).to_csv(
        covid / "index.csv", index=False
    )
    with pytest.raises(DataError, match="lacks the column.*patientid"):
        read_index(covid)


def test_split_by_patient_never_shares_a_patient_and_follows_fractions():
    patients = pd.Series([f"p{i // 3}" for i in range(300)] + [f"q{i}" for i in range(60)])
    split = split_by_patient(patients, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=3)
    assert patients.groupby(split).nunique().sum() == patients.nunique()  # no patient twice
    share = split.value_counts(normalize=True)
    assert abs(share["train"] - 0.7) < 0.03 and abs(share["test"] - 0.2) < 0.03
    again = split_by_patient(patients, {"train": 0.7, "val": 0.1, "test": 0.2}, seed=3)
    assert split.equals(again)


@pytest.mark.parametrize("fractions", [{"train": 0.7, "test": 0.2}, {"train": 1.2, "test": -0.2}])
def test_bad_split_fractions_are_rejected(fractions):
    with pytest.raises(ConfigError):
        split_by_patient(pd.Series(["a", "b"]), fractions, 0)


def test_dice_iou_and_hd95_on_a_hand_made_case():
    target = np.zeros((20, 20), np.uint8)
    target[5:15, 5:15] = 1  # 100 px
    pred = np.zeros((20, 20), bool)
    pred[5:15, 7:17] = True  # shifted 2 px right: overlap 80
    assert dice_score(pred, target) == pytest.approx(2 * 80 / 200)
    assert iou_score(pred, target) == pytest.approx(80 / 120)
    assert hd95(pred, target) == pytest.approx(2.0)
    assert hd95(pred, target, spacing=0.5) == pytest.approx(1.0)
    assert hd95(np.zeros_like(pred), target) == float("inf")


@pytest.mark.parametrize("seed", range(4))
def test_hd95_equals_the_whole_image_distance_transform(seed):
    """hd95 works on the masks' bounding box; random blobs, some touching the border."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    blobs = ndimage.gaussian_filter(rng.random((2, 120, 90)), sigma=(0, 6, 6))
    pred, lung = blobs[0] > np.quantile(blobs[0], 0.6), blobs[1] > np.quantile(blobs[1], 0.6)
    pred[: rng.integers(0, 30)] = False  # a band of empty rows above the prediction
    target = lung.astype(np.uint8)
    target[-5:, :10] = IGNORE
    valid, lung = target != IGNORE, target == 1
    pred_v = pred & valid
    surface = [m & ~ndimage.binary_erosion(m, border_value=0) for m in (pred_v, lung)]
    whole = np.concatenate(
        [
            ndimage.distance_transform_edt(~surface[1])[surface[0]],
            ndimage.distance_transform_edt(~surface[0])[surface[1]],
        ]
    )
    assert hd95(pred, target) == np.percentile(whole, 95)


def test_the_ignore_region_is_left_out_of_metrics_and_loss():
    target = np.zeros((1, 8, 8), np.uint8)
    target[0, 2:6, 2:6] = 1
    target[0, 0, :] = IGNORE
    pred = target == 1
    pred_with_ignore = pred.copy()
    pred_with_ignore[0, 0, :] = True
    assert dice_score(pred_with_ignore, target)[0] == 1.0
    logits = torch.where(torch.as_tensor(pred), 5.0, -5.0)
    other = logits.clone()
    other[0, 0, :] = 5.0  # wrong only where ignored
    t = torch.as_tensor(target)
    assert segmentation_loss(logits, t) == pytest.approx(segmentation_loss(other, t).item())


def test_postprocess_keeps_two_largest_components_and_fills_holes():
    mask = np.zeros((30, 30), bool)
    mask[2:20, 2:10] = mask[2:20, 15:25] = True
    mask[25:27, 25:27] = True  # a speck
    mask[8, 5] = False  # a hole
    out = postprocess(mask, keep=2, fill_holes=True)
    assert not out[25:27, 25:27].any() and out[8, 5]
    assert postprocess(mask, keep=0, fill_holes=False).sum() == mask.sum()


def test_lung_measurements_in_pixels_and_mm():
    mask = np.zeros((40, 40), bool)
    mask[5:35, 4:14] = True  # image-left: patient's right lung, 30 x 10
    mask[10:30, 20:36] = True  # 20 x 16
    m = lung_measurements(mask, spacing_mm=0.5)
    assert m["right_lung_height_px"] == 30 and m["left_lung_width_px"] == 16
    assert m["area_px"] == 300 + 320 and m["area_mm2"] == pytest.approx(620 * 0.25)
    assert m["right_lung_height_mm"] == 15


def test_age_bands():
    ages = pd.Series([25, 40, 59, 60, None])
    assert age_band(ages, [40, 60]).tolist() == ["<40", "40-59", "40-59", ">=60", "unknown"]


def test_augment_pair_moves_masks_with_images_and_keeps_codes():
    x = torch.zeros(4, 1, 32, 32)
    m = torch.zeros(4, 1, 32, 32, dtype=torch.uint8)
    x[:, :, 8:24, 8:24] = 1.0
    m[:, :, 8:24, 8:24] = 1
    m[:, :, 0:4, 0:4] = IGNORE
    cfg = AugmentConfig(rotate_deg=15, shift=0.1, zoom=0.1, brightness=0.1, contrast=0.2)
    xa, ma = augment_pair(x, m, cfg, torch.Generator().manual_seed(0))
    assert set(ma.unique().tolist()) <= {0, 1, IGNORE}
    inside = ma == 1
    assert xa[inside].mean() > xa[~inside & (ma != IGNORE)].mean() + 0.5  # the square moved along


def test_unknown_encoder_is_a_config_error():
    with pytest.raises(ConfigError, match="decoder_channels"):
        build_segmenter(SegmenterConfig(encoder_depth=3, decoder_channels=[8, 8]))
    small = {"encoder_depth": 3, "decoder_channels": [8] * 3}
    with pytest.raises(ConfigError, match="'resnet1800' is not an encoder smp knows: did you "
                       "mean resnet18"):  # fmt: skip
        build_segmenter(SegmenterConfig(encoder="resnet1800", **small))
    with pytest.raises(ConfigError, match="'tu-tf_efficientnet_lite9' .* did you mean tu-tf_eff"):
        build_segmenter(SegmenterConfig(encoder="tu-tf_efficientnet_lite9", **small))


def test_a_fetched_weight_file_fills_a_timm_encoder_with_its_stem_folded_to_grey(tmp_path):
    """The cpu profile's pretrained option: the EfficientNet-Lite0 file (any tensor names,
    timm's order) in smp's tu-tf_efficientnet_lite0; RGB stem kernels summed to one."""
    import timm

    torch.manual_seed(0)
    source = timm.create_model("tf_efficientnet_lite0")
    torch.save({f"_w{i}": v for i, v in enumerate(source.state_dict().values())},
               tmp_path / "lite0.pth")  # fmt: skip
    cfg = SegmenterConfig(encoder="tu-tf_efficientnet_lite0", encoder_depth=3,
                          decoder_channels=[16, 8, 8],
                          encoder_weights=str(tmp_path / "lite0.pth"))  # fmt: skip
    encoder = build_segmenter(cfg).encoder.model
    stem = source.conv_stem.weight
    assert torch.equal(encoder.conv_stem.weight, stem.sum(1, keepdim=True))
    assert torch.equal(encoder.blocks[1][0].conv_pw.weight, source.blocks[1][0].conv_pw.weight)
    assert torch.equal(encoder.bn1.running_var, source.bn1.running_var)
    with pytest.raises(DataError, match="does not exist: run `dvc repro fetch_data@"):
        build_segmenter(dataclasses.replace(cfg, encoder_weights="data/raw/none/x.pth"))
    with pytest.raises(ConfigError, match="a weight file needs a timm encoder"):
        build_segmenter(dataclasses.replace(cfg, encoder="resnet18"))


@pytest.mark.parametrize(
    ("weights", "is_file"),
    [(None, False), ("imagenet", False), ("ssl", False), ("lite0.pth", True),
     ("data/raw/efficientnet_lite0/w", True), ("w.pt", True)],
)  # fmt: skip
def test_a_weight_file_is_told_from_smp_weight_names(weights, is_file):
    """One rule for the loader above and for cxrlab.hub's list of repositories."""
    assert names_weight_file(weights) is is_file


def test_resize_methods_keep_mask_codes_and_average_areas():
    mask = np.zeros((4, 4), np.uint8)
    mask[:, 2:] = 2
    assert set(np.unique(resize(mask, 3, "nearest"))) <= {0, 2}
    checker = np.indices((8, 8)).sum(0).astype(np.uint8) % 2 * 200  # 0/200 pixel checkerboard
    assert (resize(checker, 2, "box") == 100).all()  # each output pixel the mean of its 4x4


@pytest.mark.slow
def test_gpu_profile_imagenet_encoder_loads_from_a_hub_cache_offline(tmp_path, monkeypatch):
    """encoder_weights: imagenet fetches smp-hub/resnet18.imagenet through huggingface_hub;
    a cache in hub layout (as an air-gapped machine would copy it) is used offline."""
    import huggingface_hub.constants as hub
    from safetensors.torch import save_file
    from segmentation_models_pytorch.encoders import encoders, get_encoder

    settings = encoders["resnet18"]["pretrained_settings"]["imagenet"]
    repo = tmp_path / ("models--" + settings["repo_id"].replace("/", "--"))
    snapshot = repo / "snapshots" / settings["revision"]
    snapshot.mkdir(parents=True)
    weights = get_encoder("resnet18", in_channels=3).state_dict()
    weights = {
        k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in weights.items()
    }
    save_file(weights, snapshot / "model.safetensors")
    (snapshot / "config.json").write_text("{}")
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)

    model = build_segmenter(SegmenterConfig(encoder_weights="imagenet"))
    layer = model.encoder.layer1[0].conv1.weight
    assert torch.all(layer == 0.5)  # the cached weights, not a random init
    assert model.encoder.conv1.in_channels == 1  # the RGB stem folded to one channel


def test_tiny_unet_learns_synthetic_lungs(covid):
    torch.manual_seed(0)
    train, val = tiny.segmentation_split(covid)
    model = build_segmenter(tiny.SEGMENTER)
    cfg = SegTrainConfig(epochs=6, batch_size=4, optim=tiny.optim(SegTrainConfig, lr=1e-2))
    result = train_segmenter(model, train, val, cfg)
    assert result.best_score > 0.8  # untrained nets score far lower on these blobs
    mask = predict_full_size(
        model, read_pair(covid / "images/img13.png", covid / "masks/img13_mask.png")[0], 32
    )
    assert mask.shape == (64, 72)


def test_full_size_masks_average_the_input_sizes_then_threshold(covid):
    torch.manual_seed(0)
    model = build_segmenter(tiny.SEGMENTER).eval()
    image = read_pair(covid / "images/img13.png", covid / "masks/img13_mask.png")[0]
    at_32, at_64 = full_size_probabilities(model, image, [32, 64])
    assert at_32.shape == image.shape and not torch.equal(at_32, at_64)
    # one size is the single-size prediction, exactly
    assert np.array_equal(predict_full_size(model, image, 32), at_32.numpy() > 0.5)
    assert np.array_equal(
        predict_full_size(model, image, 32, input_sizes=[32]), at_32.numpy() > 0.5
    )
    threshold = float((at_32 + at_64).median() / 2)  # splits the averaged map about in half
    both = predict_full_size(model, image, 32, threshold, input_sizes=[32, 64])
    assert np.array_equal(both, ((at_32 + at_64) / 2).numpy() > threshold)
    assert 0 < both.mean() < 1
    # the stages' predictor takes both from segmentation.eval
    cfg = SegmentationEval(threshold=threshold, input_sizes=[32, 64])
    assert np.array_equal(full_size_predictor(model, {"image_size": 32}, cfg)(image), both)


@pytest.mark.parametrize("sizes", [[], [192, 200], [0]])
def test_eval_input_sizes_must_suit_the_unet(sizes):
    with pytest.raises(ConfigError, match=r"segmentation.eval.input_sizes .*multiples of 32"):
        SegmentationEval(input_sizes=sizes)


def test_segmenter_hands_its_patience_to_the_epoch_loop(covid, monkeypatch):
    with pytest.raises(ConfigError, match="segmentation.train.patience' must be positive"):
        SegTrainConfig(patience=0)
    import cxrlab.segmentation.train as seg_train

    seen = []
    real_fit = seg_train.fit
    monkeypatch.setattr(
        seg_train, "fit", lambda *a, **kw: seen.append(kw["patience"]) or real_fit(*a, **kw)
    )
    train, val = tiny.segmentation_split(covid)
    cfg = SegTrainConfig(epochs=1, batch_size=4, optim=tiny.optim(SegTrainConfig), patience=3)
    train_segmenter(build_segmenter(tiny.SEGMENTER), train, val, cfg)
    assert seen == [3]  # what fit does with it: test_training.py's early-stop test


@pytest.mark.slow
def test_interrupted_segmenter_training_resumes_to_the_same_weights(covid, tmp_path):
    train, val = tiny.segmentation_split(covid)
    cfg = SegTrainConfig(
        epochs=3,
        batch_size=4,
        optim=tiny.optim(SegTrainConfig, lr=1e-2),
        augment=AugmentConfig(rotate_deg=5),
    )

    def fresh():
        torch.manual_seed(0)
        return build_segmenter(tiny.SEGMENTER)

    assert_resume_gives_the_same_weights(
        lambda model, ckpt, on_epoch: train_segmenter(model, train, val, cfg, ckpt, on_epoch),
        fresh,
        tmp_path / "seg.pt",
    )
