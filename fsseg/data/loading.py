"""Episode tensors: image loading, resizing to the harness's input size, binary masks, augmentation."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from fsseg import IGNORE_INDEX
from fsseg.data.adapter import DatasetAdapter
from fsseg.data.episodes import Episode, EpisodeManifest, TrainEpisodeSampler
from fsseg.models.backbones import IMAGENET_MEAN, IMAGENET_STD

_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


def binary_mask(mask: np.ndarray, class_id: int) -> np.ndarray:
    """1 where ``class_id``, 255 where ignored, 0 elsewhere (other classes become background)."""
    out = (mask == class_id).astype(np.uint8)
    out[mask == IGNORE_INDEX] = IGNORE_INDEX
    return out


def image_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """uint8 [H, W, 3] → normalised float [3, size, size] (bilinear resize when needed)."""
    t = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float().div_(255.0)
    if t.shape[-2:] != (size, size):
        t = F.interpolate(t[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
    return (t - _MEAN) / _STD


def mask_tensor(mask: np.ndarray, size: int | None) -> torch.Tensor:
    """uint8 [H, W] → long [size, size] by nearest-neighbour resizing (or unchanged when size is None)."""
    t = torch.from_numpy(np.array(mask, copy=True)).long()
    if size is not None and t.shape != (size, size):
        t = F.interpolate(t[None, None].float(), size=(size, size), mode="nearest")[0, 0].long()
    return t


def augment_pair(
    image: np.ndarray, mask: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random horizontal flip and 90-degree rotation (aerial images have no canonical orientation)."""
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    k = int(rng.integers(4))
    if k:
        image, mask = np.rot90(image, k), np.rot90(mask, k)
    return image, mask


class EpisodeTensors:
    """Turns an :class:`Episode` into the batch-dict tensors a method consumes."""

    def __init__(self, adapter: DatasetAdapter, split: str, image_size: int, label_resolution: str = "input"):
        self.adapter = adapter
        self.split = split
        self.image_size = image_size
        self.label_resolution = label_resolution

    def __call__(self, episode: Episode, rng: np.random.Generator | None = None) -> dict[str, Any]:
        def load(image_id: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
            image = self.adapter.load_image(self.split, image_id)
            mask = binary_mask(self.adapter.load_mask(self.split, image_id), class_id)
            if rng is not None:
                image, mask = augment_pair(image, mask, rng)
            return image, mask

        q_img, q_mask = load(episode.query_id, episode.class_id)
        supports = [load(s, episode.support_class) for s in episode.support_ids]
        item = {
            "query_img": image_tensor(q_img, self.image_size),
            "query_mask": mask_tensor(q_mask, self.image_size),
            "support_imgs": torch.stack([image_tensor(i, self.image_size) for i, _ in supports]),
            "support_masks": torch.stack([mask_tensor(m, self.image_size) for _, m in supports]),
            "class_id": torch.tensor(episode.class_id),
            "episode_id": torch.tensor(episode.episode_id),
        }
        if self.label_resolution == "original":
            item["query_label"] = mask_tensor(q_mask, None)
        else:
            item["query_label"] = item["query_mask"]
        return item


class TrainEpisodes(Dataset):
    """Map-style dataset: item ``i`` is training episode ``i`` (augmented), whatever the worker."""

    def __init__(self, sampler: TrainEpisodeSampler, image_size: int, augment: bool, length: int) -> None:
        self.sampler = sampler
        self.tensors = EpisodeTensors(sampler.adapter, sampler.split, image_size, "input")
        self.augment = augment
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = self.sampler.augmentation(index) if self.augment else None
        item = self.tensors(self.sampler.episode(index), rng)
        del item["query_label"]
        return item


class ManifestEpisodes(Dataset):
    """Map-style dataset over the episodes of a saved manifest (no augmentation)."""

    def __init__(
        self, manifest: EpisodeManifest, adapter: DatasetAdapter, image_size: int, label_resolution: str
    ):
        self.manifest = manifest
        self.tensors = EpisodeTensors(adapter, manifest.header["split"], image_size, label_resolution)

    def __len__(self) -> int:
        return len(self.manifest.episodes)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.tensors(self.manifest.episodes[index])


def collate_episodes(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors; query labels at original resolution may differ in size, so they stay a list."""
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if key == "query_label":
            batch[key] = values
        else:
            batch[key] = torch.stack(values)
    return batch
