"""Decoded images and masks kept in memory for the evaluations of one process.

``fsseg evaluate`` scores one trained run on several manifests in one process (every test shot and
episode seed, the support swap, the base-class episodes, each probe): the same query and support
files come back again and again, and reading, checking (sha256) and decoding them was a tenth to a
fifth of the episode loop's wall time at 64 px. :class:`DecodedImages` reads each file once (with the
adapter's checks) and returns the same arrays afterwards, read-only, up to ``max_bytes``; past that it
forgets the least recently used. The values are those the adapter returns, so no result changes.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from fsseg.data.adapter import DatasetAdapter

DEFAULT_MAX_BYTES = 1 << 30
"""1 GiB: the synthetic test split at 64 px decodes to 10 MB, 1,000 iSAID-5i 256-px crops to 0.26 GB."""


class DecodedImages:
    """``load_image`` / ``load_mask`` of ``adapter``, each (split, image id) decoded once."""

    def __init__(self, adapter: DatasetAdapter, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.adapter = adapter
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str, str], np.ndarray] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def load_image(self, split: str, image_id: str) -> np.ndarray:
        return self._get("image", split, image_id)

    def load_mask(self, split: str, image_id: str) -> np.ndarray:
        return self._get("mask", split, image_id)

    def _get(self, kind: str, split: str, image_id: str) -> np.ndarray:
        key = (kind, split, image_id)
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
            self.hits += 1
            return value
        self.misses += 1
        load = self.adapter.load_image if kind == "image" else self.adapter.load_mask
        value = load(split, image_id)
        value.setflags(write=False)  # shared between episodes: nobody may change it in place
        self._items[key] = value
        self._bytes += value.nbytes
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.nbytes
        return value

    def warm(self, split: str, image_ids: list[str]) -> None:
        """Decode the images and masks of ``image_ids`` now (a head start, e.g. while a model loads).

        Stops quietly at the first file that cannot be read: the episode loop reads it again and
        reports it then. Not safe to run while another thread uses this object."""
        for image_id in image_ids:
            try:
                self.load_image(split, image_id)
                self.load_mask(split, image_id)
            except Exception:  # reported by the episode loop, which reads the file again
                return

