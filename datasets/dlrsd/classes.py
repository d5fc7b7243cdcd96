"""DLRSD class list and the two published 15-class few-shot variants: the one place they are written.

DLRSD (Shao et al., "Performance evaluation of single-label and multi-label remote sensing image
retrieval using a dense labeling dataset", Remote Sensing 2018) labels the 2,100 UC Merced images
with 17 classes; label value = class id (position in :data:`CLASS_NAMES` + 1).

Two incompatible few-shot protocols drop two classes each and make three folds of five:

* variant **A** (TBRNet, Wang et al.; PCFNet, Ao et al.) drops *field* and *sea*;
* variant **B** (SCCNet, Wang et al., ACM SIGSPATIAL 2023; HRL, He et al., IEEE TGRS 2025) drops
  *trees* and *water* (the first 15 labels, in label order).

A dropped class is neither novel nor base: the harness treats it as background everywhere.
"""

from __future__ import annotations

from typing import Literal

CLASS_NAMES: tuple[str, ...] = (
    "airplane",
    "bare_soil",
    "buildings",
    "cars",
    "chaparral",
    "court",
    "dock",
    "field",
    "grass",
    "mobile_home",
    "pavement",
    "sand",
    "sea",
    "ship",
    "tanks",
    "trees",
    "water",
)

Variant = Literal["A", "B"]

VARIANT_FOLDS: dict[str, tuple[tuple[int, ...], ...]] = {
    # airplane..chaparral / court, dock, grass, mobile_home, pavement / sand, ship, tanks, trees, water
    "A": ((1, 2, 3, 4, 5), (6, 7, 9, 10, 11), (12, 14, 15, 16, 17)),
    # airplane..chaparral / court, dock, field, grass, mobile_home / pavement, sand, sea, ship, tanks
    "B": ((1, 2, 3, 4, 5), (6, 7, 8, 9, 10), (11, 12, 13, 14, 15)),
}
"""Novel class ids of each fold, per variant."""

VARIANT_PAPERS: dict[str, str] = {"A": "TBRNet, PCFNet", "B": "SCCNet, HRL"}

RELEASED_IMAGES = 2100
"""21 UC Merced scene classes x 100 images; a copy that differs gets a warning with the difference."""


def dropped_classes(variant: str) -> tuple[str, ...]:
    """Names of the classes a variant leaves out of every fold."""
    used = {c for fold in VARIANT_FOLDS[variant] for c in fold}
    return tuple(name for i, name in enumerate(CLASS_NAMES, start=1) if i not in used)


for _folds in VARIANT_FOLDS.values():
    _ids = [c for fold in _folds for c in fold]
    assert len(_ids) == len(set(_ids)) == 15 and all(1 <= c <= len(CLASS_NAMES) for c in _ids)
assert dropped_classes("A") == ("field", "sea") and dropped_classes("B") == ("trees", "water")
