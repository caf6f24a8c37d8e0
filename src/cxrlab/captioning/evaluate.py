"""Caption metrics (pycocoevalcap and rouge-score) and the two retrieval baselines.

- BLEU-1..4, METEOR, ROUGE-L and CIDEr come from pycocoevalcap, on captions
  lower-cased and split into alphanumeric word tokens (``COVID-19`` is ``covid 19``,
  however a tokenizer spaced the hyphen). METEOR runs a Java process, started once
  per scorer.
- ROUGE-1/2/L F-measures come from rouge-score, with its Porter stemmer.
- SPICE is left out: it downloads Stanford CoreNLP on first use, which fails offline.

CIDEr's IDF weights come from the reference set, so it is only comparable between
systems scored on the same references, which is how it is used here.

N-gram scores on partly templated captions reward the template. :func:`grounding` asks
whether a caption reads the image instead: its view (PA, AP, AP supine) and its finding
labels, parsed as :mod:`cxrlab.captioning.data` writes them, against the reference's,
and how many distinct captions a system writes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np

from cxrlab.captioning.vocabulary import COVID_FINDINGS, NIH_LABELS, VIEWS
from cxrlab.classification.retrieval import nearest_neighbours
from cxrlab.core.errors import ConfigError, DataError

WORD = re.compile(r"[a-z0-9]+")
EMPTY = "<empty>"


def normalize_caption(text: str) -> str:
    """Lower-case word tokens joined by spaces: ``"PA film. COVID-19!"`` -> ``pa film covid 19``."""
    return " ".join(WORD.findall(str(text).lower()))


class CaptionScorer:
    """Scores hypothesis captions against one reference each.

    Args:
        meteor: Whether to compute METEOR (needs Java; the JVM starts on first use
            and is reused for every later call).
    """

    def __init__(self, meteor: bool = True) -> None:
        self.use_meteor = meteor
        self._meteor = None

    def score(self, references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
        """Corpus-level metrics of ``hypotheses`` against ``references``, row by row.

        Returns:
            ``bleu_1``..``bleu_4``, ``meteor`` (if on), ``rouge_l``, ``cider`` and
            ``rouge1_f``, ``rouge2_f``, ``rougeL_f`` (rouge-score).

        Raises:
            DataError: If the lists differ in length, are empty, or a reference is empty.
        """
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
        from rouge_score.rouge_scorer import RougeScorer

        if len(references) != len(hypotheses) or not references:
            raise DataError(
                f"{len(hypotheses)} generated captions for {len(references)} references; "
                "expected one per reference and at least one."
            )
        refs = [normalize_caption(r) for r in references]
        if any(not r for r in refs):
            raise DataError(f"reference caption {refs.index('')} is empty.")
        hyps = [normalize_caption(h) or EMPTY for h in hypotheses]
        gts = {i: [r] for i, r in enumerate(refs)}
        res = {i: [h] for i, h in enumerate(hyps)}
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        scores = {f"bleu_{n + 1}": float(b) for n, b in enumerate(bleu)}
        scores["rouge_l"] = float(Rouge().compute_score(gts, res)[0])
        scores["cider"] = float(Cider().compute_score(gts, res)[0])
        if self.use_meteor:
            scores["meteor"] = float(self._meteor_scorer().compute_score(gts, res)[0])
        rouge = RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
        per = [rouge.score(r, h) for r, h in zip(refs, hyps, strict=True)]
        for key in ("rouge1", "rouge2", "rougeL"):
            scores[f"{key}_f"] = float(np.mean([p[key].fmeasure for p in per]))
        return scores

    def _meteor_scorer(self):
        if self._meteor is None:
            import shutil

            from pycocoevalcap.meteor.meteor import Meteor

            if shutil.which("java") is None:
                raise ConfigError(
                    "METEOR needs Java, and no java is on PATH: install a JRE "
                    "(apt install default-jre-headless) or set captioning.evaluate.meteor: false."
                )

            self._meteor = Meteor()
        return self._meteor


# Longest first, so "ap supine" is not read as "ap" and "covid 19 pneumonia and ards"
# not as "covid 19 pneumonia".
_VIEWS = sorted({normalize_caption(v) for v in VIEWS.values()}, key=len, reverse=True)
_FINDINGS = sorted(
    {normalize_caption(f) for f in [*COVID_FINDINGS.values(), *NIH_LABELS.values()]},
    key=len, reverse=True,
)  # fmt: skip


def caption_view_and_findings(text: str) -> tuple[str | None, frozenset[str]]:
    """The view a caption names and the finding labels of its findings sentence.

    ``"AP supine chest radiograph. Cardiomegaly and pleural effusion. ..."`` gives
    ``("ap supine", {"cardiomegaly", "pleural effusion"})``; a caption with no such view or
    sentence gives None or an empty set. Only the sentence right after the view is read,
    so a clinical note that mentions an effusion does not count as a finding label.
    """
    first, _, rest = str(text).partition(".")
    head = normalize_caption(first)
    view = next((v for v in _VIEWS if head == f"{v} chest radiograph"), None)
    sentence = f" {normalize_caption(rest.partition('.')[0])} "
    found = set()
    for finding in _FINDINGS:
        if f" {finding} " in sentence:
            found.add(finding)
            sentence = sentence.replace(f" {finding} ", " ")
    return view, frozenset(found)


def grounding(references: Sequence[str], captions: Sequence[str]) -> dict[str, float]:
    """View accuracy, finding-set accuracy (exact match) and distinct captions."""
    if len(references) != len(captions) or not captions:
        raise DataError(f"{len(captions)} captions for {len(references)} references.")
    pairs = [(caption_view_and_findings(r), caption_view_and_findings(c))
             for r, c in zip(references, captions, strict=True)]  # fmt: skip
    return {
        "view_accuracy": float(np.mean([r[0] == c[0] for r, c in pairs])),
        "findings_accuracy": float(np.mean([r[1] == c[1] for r, c in pairs])),
        "distinct_captions": len(set(captions)),
    }


def most_frequent_caption(train_captions: Sequence[str]) -> str:
    """The training caption that occurs most often (ties: the first seen)."""
    if not train_captions:
        raise DataError("no training captions for the most-frequent-caption baseline.")
    return Counter(train_captions).most_common(1)[0][0]


def nearest_train_captions(
    train_embeddings: np.ndarray, train_captions: Sequence[str], query_embeddings: np.ndarray
) -> list[str]:
    """For each query image, the caption of its nearest training image (cosine)."""
    _, idx = nearest_neighbours(train_embeddings, query_embeddings, k=1)
    return [train_captions[i] for i in idx[:, 0]]


def concept_f1(predicted: Sequence[Sequence[str]], reference: Sequence[Sequence[str]]) -> float:
    """ImageCLEF concept-detection F1: per-image F1 of the CUI sets, averaged."""
    if len(predicted) != len(reference):
        raise DataError(f"{len(predicted)} predictions for {len(reference)} references.")
    scores = []
    for p, r in zip(predicted, reference, strict=True):
        p, r = set(p), set(r)
        if not p and not r:
            scores.append(1.0)
            continue
        tp = len(p & r)
        scores.append(2 * tp / (len(p) + len(r)))
    return float(np.mean(scores)) if scores else 0.0


def score_systems(
    references: Sequence[str],
    systems: dict[str, Sequence[str]],
    concepts_of: Callable[[str], list[str]],
    scorer: CaptionScorer,
) -> dict[str, dict[str, float]]:
    """Caption metrics and concept F1 of each system, plus the model's margins.

    Args:
        references: One reference caption per test image.
        systems: Name to captions, one per reference; ``model`` is compared with the rest.
        concepts_of: Text to its CUIs (a :class:`~cxrlab.captioning.concepts.ConceptMapper`).
        scorer: The caption scorer.

    Returns:
        ``{system: metrics}`` and ``margin_over_best_baseline``: the model's value minus
        the best other system's, per metric.
    """
    reference_concepts = [concepts_of(t) for t in references]
    scores = {}
    for name, captions in systems.items():
        scores[name] = scorer.score(references, captions) | grounding(references, captions)
        predicted = [concepts_of(t) for t in captions]
        scores[name]["concept_f1"] = concept_f1(predicted, reference_concepts)
    baselines = [s for s in systems if s != "model"]
    scores["margin_over_best_baseline"] = {
        k: v - max(scores[b][k] for b in baselines) for k, v in scores["model"].items()
    }
    return scores
