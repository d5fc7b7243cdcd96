"""The embedded synthetic aerial benchmark, dataset name ``synthetic``: generated locally, no download."""

from fsseg_datasets.synthetic.adapter import SyntheticAerial
from fsseg_datasets.synthetic.classes import CLASS_NAMES, FOLDS

__all__ = ["CLASS_NAMES", "FOLDS", "SyntheticAerial"]
