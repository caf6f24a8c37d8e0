"""Stage classifier_retrieval: nearest-neighbour search over the classifier's embeddings.

Test images query an index of the training images' penultimate embeddings (cosine
similarity, FAISS); a neighbour is relevant when it has the query's label.

Inputs:  ``classifier.paths.model``, ``classifier.paths.data``; params ``classifier.retrieval``.
Outputs: ``classifier.paths.retrieval_live`` (dvclive metrics.json: precision@k);
         ``classifier.paths.figures.retrieval``.
"""

import logging

import numpy as np
from dvclive import Live

from cxrlab.classification.data import load_pneumoniamnist
from cxrlab.classification.figures import retrieval_gallery
from cxrlab.classification.model import embed, load_classifier
from cxrlab.classification.retrieval import nearest_neighbours, precision_at_k
from cxrlab.core.errors import ConfigError
from cxrlab.core.transforms import to_tensor
from cxrlab.core.utils import seed_everything
from cxrlab.params import load_section
from cxrlab.stage import run_stage

log = logging.getLogger("classifier_retrieval")


def main() -> None:
    """Embed train and test, search, score precision@k and draw the gallery."""
    params = load_section("classifier")
    paths, cfg = params.paths, params.retrieval
    if not cfg.ks or min(cfg.ks) < 1:
        raise ConfigError(f"classifier.retrieval.ks must be positive integers, got {cfg.ks}.")
    seed_everything(params.train.seed)
    model, meta = load_classifier(paths.model)
    splits = load_pneumoniamnist(paths.data)
    train, test = splits["train"], splits["test"]
    base = embed(model, to_tensor(train.images, meta["image_size"])).numpy()
    queries = embed(model, to_tensor(test.images, meta["image_size"])).numpy()
    k = max(max(cfg.ks), cfg.gallery_neighbours)
    similarity, neighbours = nearest_neighbours(base, queries, k)
    scores = precision_at_k(test.labels, train.labels[neighbours], cfg.ks)
    with Live(dir=paths.retrieval_live, dvcyaml=False, save_dvc_exp=False) as live:
        for key, value in scores.items():
            live.log_metric(f"test/{key}", value, plot=False)
    log.info("retrieval on %d test queries: %s", len(queries), scores)

    # Gallery: the first queries of each class, alternating, so both classes show.
    picks = np.concatenate(
        [np.flatnonzero(test.labels == c)[: cfg.gallery_queries // 2] for c in (0, 1)]
    )
    n = cfg.gallery_neighbours
    retrieval_gallery(
        test.images[picks],
        test.labels[picks],
        train.images,
        train.labels,
        neighbours[picks, :n],
        similarity[picks, :n],
        paths.figures.retrieval,
    )


if __name__ == "__main__":
    run_stage(main)
