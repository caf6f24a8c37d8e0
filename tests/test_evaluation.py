import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from cxrlab.classification.evaluate import binary_metrics, choose_threshold
from cxrlab.classification.figures import outcome_groups
from cxrlab.classification.gradcam import grad_cam
from cxrlab.classification.model import build_classifier
from cxrlab.classification.retrieval import nearest_neighbours, precision_at_k

Y = np.array([0, 0, 0, 1, 1, 1, 1, 0])
P = np.array([0.1, 0.6, 0.3, 0.8, 0.4, 0.9, 0.7, 0.2])


def test_binary_metrics_hand_made_case():
    m = binary_metrics(Y, P, 0.5)
    # predictions: 0 1 0 1 0 1 1 0 -> tn 3, fp 1, fn 1, tp 3
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (3, 1, 1, 3)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["specificity"] == pytest.approx(0.75)
    pred = (P >= 0.5).astype(int)
    assert m["precision"] == pytest.approx(skm.precision_score(Y, pred))
    assert m["recall"] == pytest.approx(skm.recall_score(Y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(Y, pred))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(Y, pred))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(Y, P))  # 15/16


def test_binary_metrics_with_one_class_and_no_positive_predictions():
    m = binary_metrics(np.zeros(4), np.full(4, 0.1), 0.5)
    assert m["accuracy"] == 1.0 and m["tn"] == 4 and m["f1"] == 0.0 and np.isnan(m["auc"])


@pytest.mark.parametrize("method", ["youden", "f1", "accuracy"])
def test_threshold_matches_brute_force(method):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(y * 0.3 + rng.normal(0.4, 0.2, 200), 0, 1)
    t = choose_threshold(y, p, method)

    def score(th):
        m = binary_metrics(y, p, th)
        return {
            "youden": m["recall"] + m["specificity"] - 1,
            "f1": m["f1"],
            "accuracy": m["accuracy"],
        }[method]

    best = max(score(th) for th in np.concatenate([[0.0], np.unique(p), [1.0]]))
    assert score(t) == pytest.approx(best)


def test_threshold_separates_a_separable_case():
    t = choose_threshold(np.array([0, 0, 1, 1]), np.array([0.2, 0.3, 0.6, 0.9]), "youden")
    assert 0.3 < t < 0.6


def test_precision_at_k_hand_made():
    neighbours = np.array([[1, 1, 0], [0, 1, 1]])
    assert precision_at_k(np.array([1, 0]), neighbours, [1, 3]) == {
        "precision_at_1": 1.0,
        "precision_at_3": pytest.approx(3 / 6),
    }


def test_nearest_neighbours_finds_each_point_first():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(50, 16))
    sims, idx = nearest_neighbours(base, base[[3, 7]] * 5.0, k=4)  # scale-invariant
    assert idx[:, 0].tolist() == [3, 7]
    assert np.allclose(sims[:, 0], 1.0, atol=1e-5) and np.all(np.diff(sims, axis=1) <= 1e-6)


def test_grad_cam_shape_range_and_hook_removed(tiny_model_cfg):
    torch.manual_seed(0)
    model = build_classifier(tiny_model_cfg)
    x = torch.randn(5, 1, 28, 28)
    cams = grad_cam(model, x, target=torch.tensor([0, 1, 1, 0, 1]), batch_size=2)
    assert cams.shape == (5, 28, 28)
    assert cams.min() >= 0 and cams.max() <= 1 + 1e-6
    assert (cams.flatten(1).max(1).values > 0.99).any()
    assert not model.last_conv_block._forward_hooks


def test_outcome_groups_rank_by_confidence():
    groups = outcome_groups(Y, P, 0.5, n=2)
    assert groups["true positive"].tolist() == [5, 3]
    assert groups["true negative"].tolist() == [0, 7]
    assert groups["false positive"].tolist() == [1]
    assert groups["false negative"].tolist() == [4]
