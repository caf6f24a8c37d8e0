"""Our metrics against independent, maintained implementations, on the same inputs.

MONAI (Dice, IoU, the boundary distances under HD95), torchmetrics (calibration error,
retrieval precision), pytorch-fid (the Fréchet distance), captum (Grad-CAM) and
scikit-learn (sample-averaged F1) are test-only dependencies: the pipeline keeps its own
small functions, and these tests say that they compute what the libraries compute.
"""

import numpy as np
import pytest
import torch

from cxrlab.segmentation.data import IGNORE

RNG = np.random.default_rng(0)


def blobs(n: int, size: int = 96, rng=RNG) -> np.ndarray:
    """Boolean masks (n, size, size), each a union of 1-3 random ellipses."""
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), bool)
    for mask in masks:
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.uniform(0.2, 0.8, 2) * size
            ry, rx = rng.uniform(0.08, 0.3, 2) * size
            mask |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return masks


def test_dice_and_iou_match_monai():
    from monai.metrics import compute_dice, compute_iou

    from cxrlab.segmentation.evaluate import dice_score, iou_score

    pred, target = blobs(12), blobs(12)
    as_onehot = lambda m: torch.as_tensor(m[:, None].astype(np.float32))  # noqa: E731
    ours = dice_score(pred, target.astype(np.uint8))
    theirs = compute_dice(as_onehot(pred), as_onehot(target), include_background=True)
    np.testing.assert_allclose(ours, theirs[:, 0].numpy(), rtol=1e-6)
    ours = iou_score(pred, target.astype(np.uint8))
    theirs = compute_iou(as_onehot(pred), as_onehot(target), include_background=True)
    np.testing.assert_allclose(ours, theirs[:, 0].numpy(), rtol=1e-6)


def test_dice_leaves_the_ignored_pixels_out():
    from cxrlab.segmentation.evaluate import dice_score

    pred, target = blobs(1), blobs(1).astype(np.uint8)
    outside = ~(pred[0] | target[0].astype(bool))
    coded = target.copy()
    coded[0][outside] = IGNORE  # ignored pixels count as neither lung nor prediction
    noisy = pred | (coded == IGNORE)
    assert dice_score(noisy, coded)[0] == pytest.approx(dice_score(pred, target)[0])


def test_hd95_pools_both_directions_as_medpy_does():
    """HD95 here is the 95th percentile of the boundary distances of both directions
    pooled (medpy's hd95). MONAI's boundaries and distances give the same number when
    pooled the same way; MONAI's own HD95 takes the larger of the two directed 95th
    percentiles, which is never smaller."""
    from monai.metrics import compute_hausdorff_distance
    from monai.metrics.utils import get_mask_edges, get_surface_distance

    from cxrlab.segmentation.evaluate import hd95

    for pred, target in zip(blobs(8), blobs(8), strict=True):
        edges_pred, edges_target = get_mask_edges(pred, target, crop=True)
        pooled = np.concatenate(
            [
                get_surface_distance(edges_pred, edges_target),
                get_surface_distance(edges_target, edges_pred),
            ]
        )
        ours = hd95(pred, target.astype(np.uint8))
        assert ours == pytest.approx(np.percentile(pooled, 95), rel=1e-6)
        onehot = lambda m: torch.as_tensor(m[None, None].astype(np.float32))  # noqa: E731
        monai_hd95 = compute_hausdorff_distance(onehot(pred), onehot(target), percentile=95)
        assert float(monai_hd95) >= ours - 1e-6


def test_calibration_error_matches_torchmetrics():
    """Ours: top-label confidence in n equal bins over [0.5, 1]. torchmetrics' multiclass
    ECE over [0, 1] with 2n bins is the same, since no top-label confidence is below 0.5."""
    from torchmetrics.functional.classification import multiclass_calibration_error

    from cxrlab.classification.evaluate import expected_calibration_error

    prob = RNG.uniform(0, 1, 500)
    labels = (RNG.uniform(0, 1, 500) < prob**2).astype(int)  # over-confident on purpose
    ours = expected_calibration_error(labels, prob, n_bins=10)
    both = torch.as_tensor(np.stack([1 - prob, prob], 1), dtype=torch.float64)
    theirs = multiclass_calibration_error(both, torch.as_tensor(labels), 2, n_bins=20)
    assert ours > 0.02 and ours == pytest.approx(float(theirs), abs=1e-6)


def test_precision_at_k_matches_torchmetrics_retrieval_precision():
    from torchmetrics.functional.retrieval import retrieval_precision

    from cxrlab.classification.retrieval import nearest_neighbours, precision_at_k

    index, queries = RNG.normal(size=(200, 16)), RNG.normal(size=(30, 16))
    index_labels, query_labels = RNG.integers(0, 3, 200), RNG.integers(0, 3, 30)
    sims, idx = nearest_neighbours(index, queries, 10)
    ours = precision_at_k(query_labels, index_labels[idx], ks=[1, 5, 10])
    for k in (1, 5, 10):
        per_query = [
            retrieval_precision(
                torch.as_tensor(sims[q]), torch.as_tensor(index_labels[idx[q]] == query_labels[q]),
                top_k=k,
            )
            for q in range(len(queries))
        ]  # fmt: skip
        assert ours[f"precision_at_{k}"] == pytest.approx(float(torch.stack(per_query).mean()))


def test_frechet_distance_matches_pytorch_fid():
    from pytorch_fid.fid_score import calculate_frechet_distance

    from cxrlab.generation.evaluate import frechet_distance

    a = RNG.normal(size=(300, 8))
    b = RNG.normal(0.3, 1.4, size=(250, 8)) @ RNG.normal(size=(8, 8))
    theirs = calculate_frechet_distance(
        a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    )
    assert frechet_distance(a, b) == pytest.approx(theirs, rel=1e-8)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # fewer images than features, as with Inception's 2048: the exact low-rank route
    a, b = (
        RNG.normal(size=(40, 64)),
        RNG.normal(0.2, 1.3, size=(30, 64)) @ RNG.normal(size=(64, 64)),
    )
    theirs = calculate_frechet_distance(
        a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    )
    assert frechet_distance(a, b) == pytest.approx(theirs, rel=1e-6)


def test_grad_cam_matches_captum(tiny_model_cfg):
    from captum.attr import LayerAttribution, LayerGradCam

    from cxrlab.classification.gradcam import grad_cam
    from cxrlab.classification.model import build_classifier

    torch.manual_seed(0)
    model = build_classifier(tiny_model_cfg).eval()
    x = torch.randn(6, 1, 28, 28)
    target = torch.tensor([0, 1, 1, 0, 1, 0])
    ours = grad_cam(model, x, target)
    raw = LayerGradCam(model, model.last_conv_block).attribute(
        x, target=target, relu_attributions=True
    )
    theirs = LayerAttribution.interpolate(raw, x.shape[-2:], "bilinear")[:, 0].detach()
    theirs = theirs / theirs.flatten(1).max(1).values.clamp_min(1e-12).view(-1, 1, 1)
    assert ours.flatten(1).max(1).values.gt(0).any()
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_concept_f1_is_sklearns_sample_averaged_f1():
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import MultiLabelBinarizer

    from cxrlab.captioning.evaluate import concept_f1

    cuis = [f"C{i:07d}" for i in range(12)]
    predicted = [list(RNG.choice(cuis, RNG.integers(0, 4), replace=False)) for _ in range(40)]
    reference = [list(RNG.choice(cuis, RNG.integers(0, 4), replace=False)) for _ in range(40)]
    predicted[0], reference[0] = [], []  # ImageCLEF: two empty sets agree
    binarizer = MultiLabelBinarizer(classes=cuis).fit([cuis])
    theirs = f1_score(
        binarizer.transform(reference), binarizer.transform(predicted),
        average="samples", zero_division=1.0,
    )  # fmt: skip
    assert concept_f1(predicted, reference) == pytest.approx(theirs)
