"""Stage build_concept_mapper: learn the text-to-UMLS-CUI mapper from ROCO and score it.

The n-gram -> CUI table is fitted on ROCO's validation radiology captions (its
thresholds chosen on their last ``dev_fraction``), then scored on ROCO's test
radiology captions, which it never saw: text to CUIs, ImageCLEF F1 against the
CUIs ROCO lists.

Inputs:  ``captioning.paths.roco``; params ``captioning.concepts``.
Outputs: ``captioning.paths.mapper`` (JSON table); ``captioning.paths.mapper_live`` (dvclive).
"""

import logging

from cxrlab.captioning.concepts import concept_f1, tune_mapper
from cxrlab.captioning.roco import read_roco
from cxrlab.core.live import write_metrics
from cxrlab.params import load_section
from cxrlab.stage import run_stage

log = logging.getLogger("build_concept_mapper")


def main() -> None:
    """Fit, choose thresholds, score on held-out ROCO test captions, save."""
    params = load_section("captioning")
    fit_rows = read_roco(params.paths.roco, "validation")
    test_rows = read_roco(params.paths.roco, "test")
    mapper, chosen = tune_mapper([(t, c) for _, t, c in fit_rows], params.concepts)
    predicted = [mapper(t) for _, t, _ in test_rows]
    f1 = concept_f1(predicted, [c for _, _, c in test_rows])
    log.info(
        "mapper: %d n-grams, threshold %.2f, min count %d; ROCO test concept F1 %.4f (%d captions)",
        len(mapper.table), chosen["threshold"], chosen["min_count"], f1, len(test_rows),
    )  # fmt: skip
    mapper.save(params.paths.mapper)
    write_metrics(
        params.paths.mapper_live,
        {
            "roco_test_concept_f1": f1,
            "roco_dev_concept_f1": chosen["dev_f1"],
            "threshold": chosen["threshold"],
            "min_count": chosen["min_count"],
            "ngrams": len(mapper.table),
            "cuis": len(mapper.names),
            "fit_captions": len(fit_rows),
            "test_captions": len(test_rows),
        },
    )


if __name__ == "__main__":
    run_stage(main)
