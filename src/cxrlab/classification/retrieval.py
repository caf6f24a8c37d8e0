"""Embedding retrieval: a cosine-similarity FAISS index and precision@k."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def nearest_neighbours(
    index_embeddings: np.ndarray, query_embeddings: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine-similarity search.

    Args:
        index_embeddings: (N, D) vectors to search in.
        query_embeddings: (Q, D) query vectors.
        k: Neighbours per query.

    Returns:
        Similarities (Q, k) and indices into ``index_embeddings`` (Q, k), best first.
    """
    import faiss  # here, so that importing the caption metrics does not need it

    base = _normalise(index_embeddings)
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    return index.search(_normalise(query_embeddings), k)


def precision_at_k(
    query_labels: np.ndarray, neighbour_labels: np.ndarray, ks: Sequence[int]
) -> dict[str, float]:
    """Mean share of each query's first k neighbours that carry the query's label.

    Args:
        query_labels: (Q,) labels of the queries.
        neighbour_labels: (Q, K) labels of each query's neighbours, best first.
        ks: The cut-offs, each at most K.

    Returns:
        ``{"precision_at_<k>": value}`` for each k.
    """
    hits = neighbour_labels == np.asarray(query_labels)[:, None]
    return {f"precision_at_{k}": float(hits[:, :k].mean()) for k in ks}


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
