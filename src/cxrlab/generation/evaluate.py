"""Metrics for generated images: domain FID, the standard Inception FID, class agreement.

Inception features know nothing of chest X-rays, so the main Fréchet distance here
("domain FID") uses the penultimate features of the trained PneumoniaMNIST
classifier, and class agreement uses its predictions. The standard FID (InceptionV3
pool features at 299 px) is computed beside it, for comparison with other work.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import linalg
from tqdm.auto import tqdm

from cxrlab.classification.data import load_pneumoniamnist
from cxrlab.classification.model import embed, load_classifier, predict_proba
from cxrlab.core.pretrained import load_torchscript
from cxrlab.core.runtime import device
from cxrlab.core.transforms import to_tensor, to_uint8
from cxrlab.generation.inception import fast_inception

INCEPTION_SIZE = 299
INCEPTION_RANGE = (-1.0, 0.9921875)  # the input range of the TensorFlow FID network


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a (N, D) and b (M, D).

    ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``; the imaginary part that
    rounding leaves in the matrix square root is dropped. With no more images than
    features (Inception's 2048), the covariances are low-rank and the trace of the root
    is computed exactly from the images instead: with ``X_a``, ``X_b`` the centred features
    over sqrt(N - 1), ``Tr((S_a S_b)^(1/2))`` is the sum of the singular values of
    ``X_a X_b^T`` (an N x M matrix, not D x D).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two feature sets (N>=2, D) of one width, got {a.shape}, {b.shape}.")
    mu_a, mu_b = a.mean(0), b.mean(0)
    if a.shape[1] >= min(len(a), len(b)):
        xa, xb = (a - mu_a) / np.sqrt(len(a) - 1), (b - mu_b) / np.sqrt(len(b) - 1)
        root_trace = np.linalg.svd(xa @ xb.T, compute_uv=False).sum()
        value = ((mu_a - mu_b) ** 2).sum() + (xa**2).sum() + (xb**2).sum() - 2 * root_trace
        return float(max(value, 0.0))
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():
        eye = np.eye(len(cov_a)) * 1e-6
        root = linalg.sqrtm((cov_a + eye) @ (cov_b + eye))
    value = ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * np.real(root))
    return float(max(value, 0.0))


def inception_features(
    weights: str | Path, batch_size: int = 50
) -> Callable[[np.ndarray], np.ndarray]:
    """The standard FID's feature map: uint8 grey images (N, H, W) to (N, 2048).

    ``weights`` is the FID InceptionV3 as TorchScript (fetched as ``fid_inception``).
    Each image is repeated over 3 channels, resized bilinearly to 299 px and scaled to
    the network's input range, as the FID reference tools do.
    """
    net = fast_inception(load_torchscript(weights)).to(device())
    low, high = INCEPTION_RANGE

    @torch.no_grad()
    def features(images: np.ndarray) -> np.ndarray:
        out = []
        for start in tqdm(range(0, len(images), batch_size), desc="Inception", leave=False):
            x = torch.as_tensor(images[start : start + batch_size]).float().div(255)
            x = F.interpolate(x[:, None].to(device()), size=INCEPTION_SIZE, mode="bilinear")
            x = (x * (high - low) + low).clamp(low, high).expand(-1, 3, -1, -1)
            out.append(net(x).flatten(1).float().cpu())
        return torch.cat(out).numpy()

    return features


def classifier_features(path: str | Path) -> Callable[[np.ndarray], tuple]:
    """A map from uint8 images to the trained classifier's (features, P(positive))."""
    model, meta = load_classifier(path)

    def features(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = to_tensor(images, meta["image_size"])
        return embed(model, x).numpy(), predict_proba(model, x).numpy()

    return features


def real_sets(data: str | Path, resolution: int, splits=("val", "test")) -> dict:
    """``{split: (uint8 images, labels)}`` of PneumoniaMNIST at ``resolution``.

    The images pass through the generation resolution and back, as generated ones do.
    """
    loaded = load_pneumoniamnist(data)
    return {s: (to_uint8(to_tensor(loaded[s].images, resolution)), loaded[s].labels)
            for s in splits}  # fmt: skip


def class_matched(labels: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Indices of the largest subset of ``labels`` with ``reference``'s class mix.

    FID compares distributions, so a generated set with another class mix than the real
    one (50/50 against PneumoniaMNIST test's 37.5/62.5) is penalised for the mix alone.
    Each class keeps its first images (the generation order is seeded).
    """
    labels, reference = np.asarray(labels), np.asarray(reference)
    classes = np.unique(reference)
    share = np.array([(reference == c).mean() for c in classes])
    have = np.array([(labels == c).sum() for c in classes])
    total = int(np.floor(min(have / share) + 1e-9))  # the class that runs out first
    keep = [
        np.flatnonzero(labels == c)[: round(total * s)] for c, s in zip(classes, share, strict=True)
    ]
    return np.sort(np.concatenate(keep))


def class_agreement(prob_positive: np.ndarray, prompted: np.ndarray, threshold: float = 0.5):
    """Share of images the classifier puts in their prompted class (0/1), overall and per class.

    Returns:
        ``{"all": share, 0: share among class-0 prompts, 1: ...}``.
    """
    predicted = (np.asarray(prob_positive) >= threshold).astype(int)
    prompted = np.asarray(prompted).astype(int)
    shares = {"all": float((predicted == prompted).mean())}
    for cls in np.unique(prompted):
        shares[int(cls)] = float((predicted[prompted == cls] == cls).mean())
    return shares


def mean_pairwise_distance(features: np.ndarray) -> float:
    """Mean Euclidean distance over all pairs of distinct rows: a diversity score."""
    x = np.asarray(features, np.float64)
    if len(x) < 2:
        raise ValueError("diversity needs at least two images.")
    sq = (x**2).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    n = len(x)
    return float(np.sqrt(d2)[~np.eye(n, dtype=bool)].mean())


def saturated_fraction(images: np.ndarray, low: int = 5, high: int = 250) -> float:
    """Share of uint8 pixels at the ends of the range (<= ``low`` or >= ``high``).

    Real radiographs have few; a destroyed generator's black-and-white noise is mostly that.
    """
    images = np.asarray(images)
    return float(((images <= low) | (images >= high)).mean())


def agreement_scores(prob_positive, prompted, class_names) -> dict[str, float]:
    """``class_agreement`` overall and ``class_agreement_<name>`` for each prompted class."""
    agree = class_agreement(prob_positive, prompted)
    scores = {"class_agreement": agree["all"]}
    for index, name in enumerate(class_names):
        if index in agree:
            scores[f"class_agreement_{name}"] = agree[index]
    return scores


def score_set(features, prob_positive, prompted, real_features, class_names) -> dict[str, float]:
    """Domain FID against real images, class agreement (overall and per class), diversity."""
    return {
        "domain_fid": frechet_distance(features, real_features),
        **agreement_scores(prob_positive, prompted, class_names),
        "diversity": mean_pairwise_distance(features),
    }


def compare_samplers(scores: dict[str, dict[str, dict[str, float]]], fast: str, slow: str):
    """Speed-up and FID ratio of sampler ``fast`` over ``slow``, and each LoRA's gain.

    ``scores[sampler][variant]`` holds ``domain_fid``, ``class_agreement`` and
    ``images_per_s`` (and ``inception_fid``, when computed); variants are ``base`` and
    ``lora``.
    """
    out: dict[str, float] = {}
    for variant in scores[fast]:
        f, s = scores[fast][variant], scores[slow][variant]
        out[f"speedup_{variant}"] = f["images_per_s"] / s["images_per_s"]
        out[f"fid_ratio_{variant}"] = f["domain_fid"] / max(s["domain_fid"], 1e-12)
        if "inception_fid" in f:
            ratio = f["inception_fid"] / max(s["inception_fid"], 1e-12)
            out[f"inception_fid_ratio_{variant}"] = ratio
    for sampler, by_variant in scores.items():
        gain = by_variant["lora"]["class_agreement"] - by_variant["base"]["class_agreement"]
        out[f"lora_agreement_gain_{sampler}"] = gain
    return out


class SetScorer:
    """Scores generated sets against real val and test images, whose features it keeps.

    ``features`` maps uint8 images to (classifier features, P(positive)); ``inception``,
    when given, maps them to Inception pool features for the standard FID. ``real`` holds
    the real ``val`` and ``test`` (images, labels) at the generation resolution; with
    ``val`` alone, only :meth:`score_val` works, and no test image is read.
    """

    def __init__(self, features: Callable, real: dict, class_names, inception=None) -> None:
        self.features, self.inception, self.class_names = features, inception, class_names
        self.real = real
        self.domain = {split: features(images)[0] for split, (images, _) in real.items()}
        self.test_inception = inception(real["test"][0]) if inception and "test" in real else None

    def score(self, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Every score of one generated set (see the stage's docstring)."""
        feats, prob = self.features(images)
        test, test_labels = self.domain["test"], self.real["test"][1]
        row = score_set(feats, prob, labels, test, self.class_names)
        row["val_domain_fid"] = self._val_fid(feats, labels)  # choose on this
        matched = class_matched(labels, test_labels)
        row["domain_fid_matched"] = frechet_distance(feats[matched], test)
        for index, name in enumerate(self.class_names):
            row[f"domain_fid_{name}"] = frechet_distance(
                feats[labels == index], test[test_labels == index]
            )
        if self.inception:
            row["inception_fid"] = frechet_distance(
                self.inception(images[matched]), self.test_inception
            )
        row["saturated"] = saturated_fraction(images)
        return row

    def score_val(self, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """The scores to choose params by, from val alone.

        ``val_domain_fid``, class agreement (overall and per class), the saturated share.
        """
        feats, prob = self.features(images)
        return {
            "val_domain_fid": self._val_fid(feats, labels),
            **agreement_scores(prob, labels, self.class_names),
            "saturated": saturated_fraction(images),
        }

    def _val_fid(self, feats: np.ndarray, labels: np.ndarray) -> float:
        """Domain FID against real val, the generated set cut to val's class mix first.

        Val is 26/74 normal/pneumonia, the generated sets 50/50.
        """
        matched = class_matched(labels, self.real["val"][1])
        return frechet_distance(feats[matched], self.domain["val"])

    def reference(self, reconstructed_test: np.ndarray) -> dict[str, float]:
        """The floors: real val against real test, and the VAE's test reconstructions.

        The Inception FID of real val matches val's class mix to test's first. With a
        ``train`` split in ``real`` (the images the generator learnt from), it adds
        ``train_vs_<split>_fid`` for val and test, train cut to each split's class mix:
        how far each split lies from what the generator could learn.
        """
        test, (val_images, val_labels) = self.domain["test"], self.real["val"]
        out = {
            "val_vs_test_fid": frechet_distance(self.domain["val"], test),
            "vae_reconstruction_fid": frechet_distance(self.features(reconstructed_test)[0], test),
            "test_diversity": mean_pairwise_distance(test),
            "test_saturated": saturated_fraction(self.real["test"][0]),
        }
        if "train" in self.real:
            for split in ("val", "test"):
                matched = class_matched(self.real["train"][1], self.real[split][1])
                out[f"train_vs_{split}_fid"] = frechet_distance(
                    self.domain["train"][matched], self.domain[split]
                )
        if self.inception:
            matched = class_matched(val_labels, self.real["test"][1])
            out["val_vs_test_inception_fid"] = frechet_distance(
                self.inception(val_images[matched]), self.test_inception
            )
        return out
