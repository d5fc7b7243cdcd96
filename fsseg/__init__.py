"""fsseg: a reproducibility and benchmark harness for few-shot semantic segmentation of aerial images."""

__version__ = "0.1.0"

IGNORE_INDEX = 255
"""Label value that is excluded from every loss and metric."""
