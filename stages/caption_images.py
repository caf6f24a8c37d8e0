"""Stage caption_images: captions for the test images (greedy or beam search), resumable.

Results are appended batch by batch to a JSON-lines file under
``captioning.paths.checkpoints``; a killed run resumes with the images still
missing (none twice, none skipped). The final CSV is written once all are done, and the
partial file is then removed, as training checkpoints are: the next run's seconds and
images per second are its own.

Inputs:  ``captioning.paths.{model,data}``; params ``captioning.decode``.
Outputs: ``captioning.paths.predictions`` (image, reference, generated);
         ``captioning.paths.inference_live`` (dvclive: seconds, images per second).
"""

import logging
import time
from pathlib import Path

import pandas as pd

from cxrlab.captioning.data import load_caption_data
from cxrlab.captioning.model import generate_captions, is_quantized, load_captioner, pixel_values
from cxrlab.core.checkpoint import fingerprint
from cxrlab.core.live import write_metrics
from cxrlab.core.runtime import device
from cxrlab.core.utils import md5sum, resumable_map, write_csv
from cxrlab.params import load_section
from cxrlab.stage import run_stage

log = logging.getLogger("caption_images")


def main() -> None:
    """Caption every test image and write the table."""
    params = load_section("captioning")
    paths, decode = params.paths, params.decode
    pairs, images = load_caption_data(paths.data)
    test = (pairs["split"] == "test").to_numpy()
    pairs, images = pairs[test].reset_index(drop=True), images[test]
    captioner = load_captioner(paths.model)
    if not is_quantized(captioner.model):  # a 4-bit base is loaded onto the GPU already
        captioner.model.to(device())
    row_of = {name: i for i, name in enumerate(pairs["image"])}

    def caption(batch: list[str]) -> list[str]:
        x = pixel_values(captioner, images[[row_of[n] for n in batch]]).to(device())
        return generate_captions(
            captioner, x, decode.num_beams, decode.max_new_tokens, decode.no_repeat_ngram_size
        )

    weights = sorted(Path(paths.model).rglob("*.safetensors"))
    run_id = fingerprint(decode, [md5sum(p) for p in weights], list(pairs["image"]))
    partial = Path(paths.checkpoints) / "caption_images.jsonl"
    start = time.perf_counter()
    generated = resumable_map(
        list(pairs["image"]), caption, partial, run_id, decode.batch_size, desc="captioning"
    )
    seconds = time.perf_counter() - start
    table = pd.DataFrame(
        {"image": pairs["image"], "reference": pairs["caption"], "generated": generated.values()}
    )
    write_csv(paths.predictions, table)
    write_metrics(
        paths.inference_live,
        {"images": len(table), "seconds": round(seconds, 1),
         "images_per_second": round(len(table) / max(seconds, 1e-9), 3)},
    )  # fmt: skip
    partial.unlink()
    log.info("captioned %d test images in %.1f s", len(table), seconds)


if __name__ == "__main__":
    run_stage(main)
