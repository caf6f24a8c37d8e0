"""cxrlab: a reproducible, DVC-versioned lab for chest X-ray and radiology ML."""

from cxrlab.core.threads import share_cores

__version__ = "0.1.0"

# Before anything imports torch: a process that shares the cores takes its share
# (CXRLAB_WORKERS, accelerate's processes), and OpenMP's settings are read as torch loads.
share_cores()
