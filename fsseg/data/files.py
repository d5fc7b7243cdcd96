"""Reading a prepared dataset's image and label files, checked against the sha256 its index records.

Each file's sha256 is checked when it is read (it is read anyway, and hashing costs little next to
decoding), so an image or mask changed after ``prepare`` is an error naming it, never a score against a
stale index.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from fsseg.errors import DataError


def _read_checked(path: Path, expected_sha256: str | None, kind: str) -> io.BytesIO | Path:
    """The file's bytes when a sha256 is expected (and matches), else the path to open."""
    if expected_sha256 is None:
        return path
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{kind} file is missing: {path}") from None
    except OSError as err:
        raise DataError(f"{kind} file is unreadable: {path} ({err.strerror})") from None
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise DataError(f"{kind} file {path} changed after `fsseg prepare`: {CHANGED_HINT}")
    return io.BytesIO(data)


CHANGED_HINT = (
    "its sha256 differs from the one in the dataset index, so the index (class pixels, episodes) is "
    "stale; restore the file, or prepare the dataset again (a generated dataset: delete its folder first)"
)


def read_image_file(path: Path, expected_sha256: str | None = None) -> np.ndarray:
    """RGB uint8 [H, W, 3]; a missing, corrupt or changed file raises :class:`DataError` naming it."""
    source = _read_checked(path, expected_sha256, "image")
    try:
        with Image.open(source) as img:
            img.load()
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"image file is missing: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(f"image file is corrupt or unreadable: {path} ({err})") from None


def read_label_file(path: Path, expected_sha256: str | None = None) -> np.ndarray:
    """Single-channel uint8 [H, W] label image; errors name the file."""
    source = _read_checked(path, expected_sha256, "label")
    try:
        with Image.open(source) as img:
            img.load()
            if img.mode not in ("L", "P", "I", "I;16"):
                raise DataError(f"label file {path} has mode {img.mode}; expected a single-channel PNG")
            arr = np.asarray(img)
    except FileNotFoundError:
        raise DataError(f"label file is missing: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(f"label file is corrupt or unreadable: {path} ({err})") from None
    if arr.dtype != np.uint8:
        if arr.min() < 0 or arr.max() > 255:
            raise DataError(f"label file {path} holds values outside 0..255")
        arr = arr.astype(np.uint8)
    return arr
