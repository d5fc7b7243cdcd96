"""iSAID-5i class list, folds and mask palette: the one place these facts are written down.

Source: Yao et al., "Scale-aware detailed matching for few-shot aerial image semantic segmentation"
(SDM, IEEE TGRS 2021), which defines iSAID-5i; the colours are those of the iSAID semantic masks
(``*_instance_color_RGB.png``). Class id = position in :data:`CLASS_NAMES` + 1; 0 is background.
"""

from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = (
    "ship",
    "storage_tank",
    "baseball_diamond",
    "tennis_court",
    "basketball_court",
    "ground_track_field",
    "bridge",
    "large_vehicle",
    "small_vehicle",
    "helicopter",
    "swimming_pool",
    "roundabout",
    "soccer_ball_field",
    "plane",
    "harbor",
)

FOLDS: tuple[tuple[int, ...], ...] = ((1, 2, 3, 4, 5), (6, 7, 8, 9, 10), (11, 12, 13, 14, 15))
"""Novel class ids of each fold (three folds of five consecutive ids)."""

PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 0, 0),  # 0 background
    (0, 0, 63),  # 1 ship
    (0, 63, 63),  # 2 storage_tank
    (0, 63, 0),  # 3 baseball_diamond
    (0, 63, 127),  # 4 tennis_court
    (0, 63, 191),  # 5 basketball_court
    (0, 63, 255),  # 6 ground_track_field
    (0, 127, 63),  # 7 bridge
    (0, 127, 127),  # 8 large_vehicle
    (0, 0, 127),  # 9 small_vehicle
    (0, 0, 191),  # 10 helicopter
    (0, 0, 255),  # 11 swimming_pool
    (0, 191, 127),  # 12 roundabout
    (0, 127, 191),  # 13 soccer_ball_field
    (0, 127, 255),  # 14 plane
    (0, 100, 155),  # 15 harbor
)
"""RGB colour of each label id in the released colour masks (index = id); any other colour is an error."""

RELEASED_COUNTS: dict[str, int] = {"train": 18076, "val": 6363}
"""Patches in the published release (SDM); a user's copy that differs gets a warning with the difference."""

assert len(PALETTE) == len(CLASS_NAMES) + 1 and len(set(PALETTE)) == len(PALETTE)
assert sorted(c for fold in FOLDS for c in fold) == list(range(1, len(CLASS_NAMES) + 1))
