"""The class list and the fold split of the synthetic aerial benchmark: the one place they are defined.

Each class is a shape with its own texture (see :mod:`fsseg_datasets.synthetic.generator`); colour is drawn
from a pool shared by all classes and the background, so it carries no class information.
Class ids are 1..15 in the order of :data:`CLASS_NAMES`; 0 is background.
"""

from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = (
    "rectangle",
    "ellipse",
    "ring",
    "plus",
    "triangle",
    "star",
    "l_shape",
    "rounded_square",
    "bar",
    "h_shape",
    "frame",
    "diamond",
    "crescent",
    "chevron",
    "dumbbell",
)

NUM_CLASSES = len(CLASS_NAMES)

# Three folds of five novel classes, contiguous in id order as in iSAID-5i, so every fold reads as a
# range of ids and the split needs no lookup table.
FOLDS: tuple[tuple[int, ...], ...] = (
    (1, 2, 3, 4, 5),
    (6, 7, 8, 9, 10),
    (11, 12, 13, 14, 15),
)


def class_id(name: str) -> int:
    """Class id (1-based) of a class name."""
    return CLASS_NAMES.index(name) + 1
