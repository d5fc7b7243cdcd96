"""The embedded synthetic aerial benchmark, dataset name ``synthetic``: generated locally, no download."""

from datasets.synthetic.adapter import SyntheticAerial
from datasets.synthetic.classes import CLASS_NAMES, FOLDS

__all__ = ["CLASS_NAMES", "FOLDS", "SyntheticAerial"]
