"""Time train_classifier on the real PneumoniaMNIST with the cpu- and gpu-profile settings.

    python tools/bench_classifier.py --device cuda --npz data/raw/pneumoniamnist/pneumoniamnist.npz

Prints one JSON line per profile: training seconds, the best validation AUC, the test
AUC and accuracy at 0.5 of the best epoch's model, and the peak GPU memory. Used for the
GPU rows of BENCHMARKS.md; a stage run (`dvc exp run -S device=cuda`) needs DVC as well.
"""

import argparse
import json
import time

import torch

from cxrlab.classification.data import load_pneumoniamnist
from cxrlab.classification.evaluate import binary_metrics
from cxrlab.classification.model import build_classifier, predict_proba
from cxrlab.classification.train import train_classifier
from cxrlab.core.config import load_params
from cxrlab.core.runtime import use_device
from cxrlab.core.transforms import to_tensor
from cxrlab.core.utils import seed_everything, setup_logging
from cxrlab.params import parse_section


def main() -> None:
    """Train and score once per profile."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--npz", default="data/raw/pneumoniamnist/pneumoniamnist.npz")
    parser.add_argument("--profiles", nargs="+", default=["cpu", "gpu"])
    args = parser.parse_args()
    setup_logging()
    splits = load_pneumoniamnist(args.npz)
    raw = load_params("params.yaml")
    use_device(args.device)
    for profile in args.profiles:
        params = parse_section({**raw, "profile": profile}, "classifier")
        seed_everything(params.train.seed)
        model = build_classifier(params.model)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = train_classifier(model, splits["train"], splits["val"], params.train)
        seconds = time.perf_counter() - start
        x = to_tensor(splits["test"].images, params.train.image_size)
        test = binary_metrics(splits["test"].labels.ravel(), predict_proba(model, x).numpy(), 0.5)
        peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0
        row = {
            "profile": profile, "device": args.device, "image_size": params.train.image_size,
            "epochs": params.train.epochs, "train_seconds": round(seconds, 1),
            "best_epoch": result.best_epoch, "best_val_auc": round(result.best_score, 4),
            "test_auc": round(test["auc"], 4), "test_accuracy": round(test["accuracy"], 4),
            "peak_gpu_mib": round(peak),
        }  # fmt: skip
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
