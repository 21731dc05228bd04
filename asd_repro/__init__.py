"""asd-repro: a declarative reproduction harness for ASD (CVPR 2023)."""

__version__ = "0.1.0"
