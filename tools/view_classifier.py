"""Can the view be learnt from the caption train split? A supervised view classifier.

    python -m tools.view_classifier                  # after prepare_captions
    python -m tools.view_classifier --sizes 128 224 --seeds 0 1 2

The captioner names the view (PA, AP, AP supine) in its captions, and evaluate_captions
scores it. This tool asks how far a model trained for that one job gets with the same
images: the fetched EfficientNet-Lite0 (``captioning.model.vision.weights``), fine-tuned
whole with a new linear head on the train split's views (parsed from the reference
captions, class-weighted cross-entropy, the segmenter's kind of augmentation), and scored
on the val split after every epoch. Test is not read.

Prints one JSON line per size and seed: the last epoch's and the best epoch's val view
accuracy, the accuracy on val's non-PA images, and the accuracy of always answering the
most frequent train view. A classifier that cannot beat that baseline says the caption
data cannot teach a captioner the view either.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cxrlab.captioning.data import load_caption_data, load_pair_images
from cxrlab.captioning.evaluate import caption_view_and_findings
from cxrlab.core.augment import AugmentConfig, augment_batch
from cxrlab.core.config import OptimConfig
from cxrlab.core.loop import make_optimizer, optimizer_step
from cxrlab.core.pretrained import timm_encoder
from cxrlab.core.transforms import to_tensor
from cxrlab.core.utils import seed_everything
from cxrlab.params import load_section

AUGMENT = AugmentConfig(rotate_deg=10, shift=0.06, zoom=0.12, brightness=0.15, contrast=0.25)


class ViewClassifier(torch.nn.Module):
    """A timm CNN, average-pooled, with a linear head."""

    def __init__(self, architecture: str, weights: str, classes: int) -> None:
        super().__init__()
        self.cnn = timm_encoder(architecture, weights)
        self.head = torch.nn.Linear(int(self.cnn.num_features), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for images (N, 1, S, S) in [-1, 1], Lite0's input range."""
        return self.head(self.cnn(x.expand(-1, 3, -1, -1)).mean((2, 3)))


def fit(x_train, y_train, x_val, vision, epochs: int, lr: float, seed: int) -> list:
    """Train one classifier; the val predictions after each epoch."""
    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    model = ViewClassifier(vision.arch, vision.weights, int(y_train.max()) + 1)
    batch = 16
    steps = epochs * -(-len(x_train) // batch)
    optimizer, scheduler = make_optimizer(model, OptimConfig(lr=lr, weight_decay=0.01), steps)
    counts = torch.bincount(y_train).float()
    weight = counts.sum() / (len(counts) * counts)
    predictions = []
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            logits = model(augment_batch(x_train[idx], AUGMENT, gen))
            loss = F.cross_entropy(logits, y_train[idx], weight=weight)
            optimizer_step(loss, optimizer, scheduler)
        model.eval()
        with torch.no_grad():
            predictions.append(torch.cat([model(x_val[i : i + 64]).argmax(1)
                                          for i in range(0, len(x_val), 64)]).numpy())  # fmt: skip
    return predictions


def main() -> None:
    """Fine-tune a view classifier per size and seed, and score it on val."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 224])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--lr", type=float, default=0.001)
    args = parser.parse_args()
    params = load_section("captioning")
    table, prepared = load_caption_data(params.paths.data)
    views = np.array([caption_view_and_findings(c)[0] or "none" for c in table["caption"]])
    names = sorted(set(views))
    labels = np.array([names.index(v) for v in views])
    train, val = (table["split"] == "train").to_numpy(), (table["split"] == "val").to_numpy()
    majority = np.bincount(labels[train]).argmax()
    y_val = labels[val]
    raw_dir = Path(params.paths.covid).parent  # as prepare_captions reads it
    for size in args.sizes:
        images = prepared if size == prepared.shape[-1] else load_pair_images(table, raw_dir, size)
        x = to_tensor(images, size)
        for seed in args.seeds:
            per_epoch = fit(x[train], torch.as_tensor(labels[train]), x[val],
                            params.model.vision, args.epochs, args.lr, seed)  # fmt: skip
            accuracy = [float(np.mean(p == y_val)) for p in per_epoch]
            other = y_val != majority
            other_accuracy = float(np.mean(per_epoch[-1][other] == y_val[other]))
            print(json.dumps({
                "size": size, "seed": seed, "epochs": args.epochs,
                "val_view_accuracy": round(accuracy[-1], 3),
                "val_non_majority_accuracy": round(other_accuracy, 3),
                "best_epoch_val_view_accuracy": round(max(accuracy), 3),
                "val_majority_view_accuracy": round(float(np.mean(y_val == majority)), 3),
                "views": names, "train": int(train.sum()), "val": int(val.sum()),
            }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
