"""cxrlab: a reproducible, DVC-versioned lab for chest X-ray and radiology ML."""

__version__ = "0.1.0"
