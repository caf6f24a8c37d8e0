"""Does the captioner's image tower carry the view? A linear probe on its features.

    python -m tools.probe_view            # after train_captioner

Reads the trained captioner (``captioning.paths.model``) and the prepared caption images.
Each image's view (PA, AP, AP supine) is parsed from its reference caption, as the
view accuracy of evaluate_captions does. A logistic regression on the tower's features of
the train split predicts the view of the val split; test is not read. Features: the image
tokens mean-pooled (what the nearest-image baseline uses) and all tokens side by side.

Prints one JSON line per feature kind and regularisation strength, with the accuracy of
always answering the most frequent train view for comparison. A probe no better than that
says the frozen tower gives the language model little to tell the views apart.
"""

import argparse
import json

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cxrlab.captioning.data import load_caption_data
from cxrlab.captioning.evaluate import caption_view_and_findings
from cxrlab.captioning.model import load_captioner, pixel_values, vision_tower
from cxrlab.params import load_section


@torch.no_grad()
def tower_tokens(captioner, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """The vision tower's image tokens (N, tokens, width) for uint8 images."""
    tower = vision_tower(captioner).eval()
    out = [tower(pixel_values=pixel_values(captioner, images[i : i + batch_size]))
           .last_hidden_state for i in range(0, len(images), batch_size)]  # fmt: skip
    return torch.cat(out).numpy()


def main() -> None:
    """Fit the probe on train, score it on val."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--c", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    args = parser.parse_args()
    paths = load_section("captioning").paths
    table, images = load_caption_data(paths.data)
    views = np.array([caption_view_and_findings(c)[0] or "none" for c in table["caption"]])
    train, val = (table["split"] == "train").to_numpy(), (table["split"] == "val").to_numpy()
    tokens = tower_tokens(load_captioner(paths.model), images)
    values, counts = np.unique(views[train], return_counts=True)
    majority = float(np.mean(views[val] == values[counts.argmax()]))
    for kind, x in [("pooled", tokens.mean(1)), ("all_tokens", tokens.reshape(len(tokens), -1))]:
        for c in args.c:
            probe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))
            probe.fit(x[train], views[train])
            accuracy = float(np.mean(probe.predict(x[val]) == views[val]))
            print(json.dumps({"features": kind, "C": c, "val_view_accuracy": round(accuracy, 3),
                              "val_majority_view_accuracy": round(majority, 3),
                              "train": int(train.sum()), "val": int(val.sum())}))  # fmt: skip


if __name__ == "__main__":
    main()
