"""DLRSD (UC Merced, 17 labels) in the few-shot variants A and B: registers the ``dlrsd`` adapter."""

from fsseg_datasets.dlrsd.adapter import Dlrsd

__all__ = ["Dlrsd"]
