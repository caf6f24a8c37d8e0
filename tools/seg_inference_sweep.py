"""Input sizes and threshold of the trained segmenter, scored on val or train (never test).

    python -m tools.seg_inference_sweep                  # after train_segmenter
    python -m tools.seg_inference_sweep --sets 192 192,224 --thresholds 0.5 0.6
    python -m tools.seg_inference_sweep --split train    # does a val gain show on train?

Segments every val image (train's with ``--split train``) at each input side once, then
scores each set of sides (their full-size lung probabilities averaged) at each
threshold, post-processed as ``segmentation.eval.postprocess`` says, and prints one JSON
line per setting: mean Dice, HD95 and how many images gain or lose Dice (more than 1e-4)
against the training side at 0.5. These are the figures to choose
``segmentation.eval.input_sizes`` and ``threshold`` by; ``evaluate_segmenter`` then
scores test with the choice once.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from cxrlab.core.utils import seed_everything
from cxrlab.params import load_section
from cxrlab.segmentation.data import read_manifest, read_pair
from cxrlab.segmentation.evaluate import dice_score, hd95, postprocess
from cxrlab.segmentation.model import full_size_probabilities, load_segmenter

SETS = ["192", "160", "224", "256", "192,224", "160,192", "160,192,224", "160,192,224,256"]


def main() -> None:
    """Segment the split at every side, then score each set of sides at each threshold."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=SETS, help="comma-separated input sides")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.4, 0.5, 0.6, 0.7])
    parser.add_argument("--split", choices=["val", "train"], default="val")
    args = parser.parse_args()
    params = load_section("segmentation")
    seed_everything(params.train.seed)
    model, meta = load_segmenter(params.paths.model)
    sets = [[int(side) for side in text.split(",")] for text in args.sets]
    sides = sorted({side for chosen in sets for side in chosen} | {meta["image_size"]})
    manifest = read_manifest(params.paths.prepared)
    rows = manifest[(manifest.status == "kept") & (manifest.split == args.split)]
    root, post = Path(params.paths.raw), params.eval.postprocess
    probs, targets = [], []
    for row in rows.itertuples():
        image, target = read_pair(root / "images" / row.image, root / "masks" / row.mask)
        probs.append(
            dict(zip(sides, full_size_probabilities(model, image, sides).numpy(), strict=True))
        )
        targets.append(target)

    def masks(chosen, threshold):
        means = (np.mean([prob[side] for side in chosen], axis=0) for prob in probs)
        return [postprocess(mean > threshold, post.keep, post.fill_holes) for mean in means]

    def dice(predicted):
        return np.array(
            [dice_score(m[None], t[None])[0] for m, t in zip(predicted, targets, strict=True)]
        )

    before = dice(masks([meta["image_size"]], 0.5))
    for chosen in sets:
        for threshold in args.thresholds:
            predicted = masks(chosen, threshold)
            scores = dice(predicted)
            distance = [hd95(m, t) for m, t in zip(predicted, targets, strict=True)]
            print(json.dumps({"input_sizes": chosen, "threshold": threshold,
                              "split": args.split, "dice": round(float(scores.mean()), 4),
                              "hd95_px": round(float(np.mean(distance)), 1),
                              "images_up": int((scores > before + 1e-4).sum()),
                              "images_down": int((scores < before - 1e-4).sum()),
                              "images": len(scores)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
