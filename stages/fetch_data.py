"""Stage fetch_data@<dataset>: put one raw dataset under data/raw, verified by checksum.

Inputs:  params ``fetch`` (mirrors, upstream switch, raw_dir); the dataset's checksum
         file ``src/cxrlab/core/checksums/<dataset>.md5``.
Outputs: ``<fetch.raw_dir>/<dataset>/``.
"""

import sys

from cxrlab.core.errors import ConfigError
from cxrlab.core.fetch import fetch_dataset
from cxrlab.params import load_section
from cxrlab.stage import run_stage


def main() -> None:
    """Fetch the dataset named on the command line."""
    params = load_section("fetch")
    if len(sys.argv) != 2 or sys.argv[1] not in params.datasets:
        raise ConfigError(f"usage: fetch_data.py DATASET, with DATASET one of {params.datasets}.")
    fetch_dataset(sys.argv[1], params.mirrors, params.raw_dir, params.allow_upstream)


if __name__ == "__main__":
    run_stage(main)
