"""Decoding settings of the trained captioner, scored on the val split (test is not read).

    python -m tools.decode_sweep                       # after train_captioner
    python -m tools.decode_sweep --beams 1 3 5 --no-repeat 0 3

Captions every val image under each combination of beam count and ``no_repeat_ngram_size``
(``max_new_tokens`` from ``captioning.decode``) and prints one JSON line per setting:
BLEU-4, ROUGE-L and CIDEr, view and findings accuracy, distinct captions, and seconds.
These are the figures to choose ``captioning.decode`` by; ``caption_images`` then
decodes test with the chosen setting once.
"""

import argparse
import json
import time

from cxrlab.captioning.data import load_caption_data, split_of
from cxrlab.captioning.evaluate import CaptionScorer, grounding
from cxrlab.captioning.model import generate_captions, load_captioner, pixel_values
from cxrlab.params import load_section


def main() -> None:
    """Decode val under each setting and score it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--no-repeat", type=int, nargs="+", default=[3])
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    params = load_section("captioning")
    images, references = split_of(*load_caption_data(params.paths.data), "val")
    captioner = load_captioner(params.paths.model)
    scorer = CaptionScorer(meteor=False)
    keep = ("bleu_4", "rouge_l", "cider", "view_accuracy", "findings_accuracy",
            "distinct_captions")  # fmt: skip
    for beams in args.beams:
        for no_repeat in args.no_repeat:
            start, captions = time.perf_counter(), []
            for i in range(0, len(images), args.batch_size):
                x = pixel_values(captioner, images[i : i + args.batch_size])
                captions += generate_captions(
                    captioner, x, beams, params.decode.max_new_tokens, no_repeat
                )
            seconds = time.perf_counter() - start
            scores = scorer.score(references, captions) | grounding(references, captions)
            print(json.dumps({"num_beams": beams, "no_repeat_ngram_size": no_repeat,
                              **{k: round(float(scores[k]), 4) for k in keep},
                              "val_images": len(captions), "seconds": round(seconds, 1)}),
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
