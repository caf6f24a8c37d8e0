"""Model factories: each takes a config dataclass, so tests build tiny models the same way."""

from cxrlab.models.classifier import ClassifierConfig, build_classifier

__all__ = ["ClassifierConfig", "build_classifier"]
