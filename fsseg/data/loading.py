"""Episode tensors: image loading, resizing to the harness's input size, binary masks, augmentation."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from fsseg import IGNORE_INDEX
from fsseg.data.episodes import Episode, EpisodeManifest, TrainEpisodeSampler
from fsseg.models.backbones import IMAGENET_MEAN, IMAGENET_STD

_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)


class ImageSource(Protocol):
    """Where episode tensors read their images and masks: a dataset adapter, or
    :class:`fsseg.data.decoded.DecodedImages` over one."""

    def load_image(self, split: str, image_id: str) -> np.ndarray: ...

    def load_mask(self, split: str, image_id: str) -> np.ndarray: ...


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


AUGMENTATIONS = ("flip_rot90", "pfenet", "panet", "none")
"""Training augmentation pipelines (``train.augment``); test images are never augmented."""

# PFENet's train.py pads rotations and crops with the ImageNet mean in pixel units.
_MEAN_PX = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255.0
PFENET_SCALE = (0.9, 1.1)
PFENET_ROTATE = (-10.0, 10.0)
PFENET_BLUR_KERNEL = 5
PFENET_CROP_KEEP = 0.85  # a crop keeping less of the foreground is redrawn ...
PFENET_CROP_RETRIES = 31  # ... at most this many times (util/transform.py Crop)


def _gaussian_kernel(size: int) -> torch.Tensor:
    """OpenCV's Gaussian kernel for sigma 0: sigma = 0.3 · ((size − 1) · 0.5 − 1) + 0.8."""
    sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return (k / k.sum()).float()


def _rotate(image: torch.Tensor, mask: torch.Tensor, degrees: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate about the centre by ``degrees`` (counter-clockwise, like cv2.getRotationMatrix2D), keeping
    the size; the image is bilinear and padded with the mean, the label nearest and padded with 255."""
    _, h, w = image.shape
    a = np.deg2rad(degrees)
    cos, sin = float(np.cos(a)), float(np.sin(a))
    # output → input map in normalised coordinates: D⁻¹ R⁻¹ D with D = diag(w/2, h/2)
    theta = torch.tensor([[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]])[None]
    grid = F.affine_grid(theta, [1, 1, h, w], align_corners=False)
    centred = (image - _MEAN_PX)[None]
    image = F.grid_sample(centred, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    shifted = (mask.float() + 1)[None, None]
    moved = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)[0, 0]
    mask = torch.where(moved == 0, torch.full_like(moved, IGNORE_INDEX), moved - 1).long()
    return image + _MEAN_PX, mask


def _random_crop(
    image: torch.Tensor, mask: torch.Tensor, size: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random ``size`` crop; smaller sides are first padded evenly (image: mean, label: 255). A crop
    that keeps less than 85 % of the foreground pixels is redrawn, at most 31 times (PFENet's Crop)."""
    _, h, w = image.shape
    pad_h, pad_w = max(size - h, 0), max(size - w, 0)
    if pad_h or pad_w:
        top, left = pad_h // 2, pad_w // 2
        padded = _MEAN_PX.expand(3, h + pad_h, w + pad_w).clone()
        padded[:, top : top + h, left : left + w] = image
        padded_mask = torch.full((h + pad_h, w + pad_w), IGNORE_INDEX, dtype=mask.dtype)
        padded_mask[top : top + h, left : left + w] = mask
        image, mask = padded, padded_mask
        h, w = h + pad_h, w + pad_w
    total_fg = int((mask == 1).sum())
    for attempt in range(PFENET_CROP_RETRIES + 1):
        top = int(rng.integers(h - size + 1))
        left = int(rng.integers(w - size + 1))
        crop_mask = mask[top : top + size, left : left + size]
        if int((crop_mask == 1).sum()) >= PFENET_CROP_KEEP * total_fg or attempt == PFENET_CROP_RETRIES:
            return image[:, top : top + size, left : left + size], crop_mask
    raise AssertionError("unreachable")


def pfenet_augment(
    image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """PFENet's training transforms (train.py:166-170, util/transform.py), drawn from ``rng``:
    RandScale 0.9–1.1, RandRotate ±10° (p 0.5), Gaussian blur 5×5 (p 0.5), horizontal flip (p 0.5),
    random ``size`` crop. Returns the normalised image [3, size, size] and the label [size, size]."""
    img = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).float()
    lab = torch.from_numpy(np.array(mask, copy=True)).long()
    h, w = lab.shape
    scale = PFENET_SCALE[0] + (PFENET_SCALE[1] - PFENET_SCALE[0]) * rng.random()
    new = (max(1, round(h * scale)), max(1, round(w * scale)))
    img = F.interpolate(img[None], size=new, mode="bilinear", align_corners=False)[0]
    lab = F.interpolate(lab[None, None].float(), size=new, mode="nearest")[0, 0].long()
    if rng.random() < 0.5:
        angle = PFENET_ROTATE[0] + (PFENET_ROTATE[1] - PFENET_ROTATE[0]) * rng.random()
        img, lab = _rotate(img, lab, angle)
    if rng.random() < 0.5:
        k = _gaussian_kernel(PFENET_BLUR_KERNEL)
        r = PFENET_BLUR_KERNEL // 2
        padded = F.pad(img[None], (r, r, r, r), mode="reflect")  # OpenCV's default border (reflect 101)
        padded = F.conv2d(padded, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
        img = F.conv2d(padded, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)[0]
    if rng.random() < 0.5:
        img, lab = img.flip(-1), lab.flip(-1)
    img, lab = _random_crop(img, lab, size, rng)
    return (img / 255.0 - _MEAN) / _STD, lab.contiguous()


def augmented_tensors(
    image: np.ndarray, mask: np.ndarray, size: int, pipeline: str, rng: np.random.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training (image, binary label) pair through ``pipeline``, as model-input tensors of ``size``."""
    if rng is None or pipeline == "none":
        return image_tensor(image, size), mask_tensor(mask, size)
    if pipeline == "flip_rot90":
        image, mask = augment_pair(image, mask, rng)
        return image_tensor(image, size), mask_tensor(mask, size)
    if pipeline == "panet":
        # PANet's train.py: Resize to the input size, then RandomMirror (p 0.5)
        img, lab = image_tensor(image, size), mask_tensor(mask, size)
        if rng.random() < 0.5:
            img, lab = img.flip(-1), lab.flip(-1)
        return img, lab
    if pipeline == "pfenet":
        return pfenet_augment(image, mask, size, rng)
    raise ValueError(f"unknown augmentation pipeline {pipeline!r}; known: {', '.join(AUGMENTATIONS)}")


class EpisodeTensors:
    """Turns an :class:`Episode` into the batch-dict tensors a method consumes."""

    def __init__(self, adapter: ImageSource, split: str, image_size: int, label_resolution: str = "input"):
        self.adapter = adapter
        self.split = split
        self.image_size = image_size
        self.label_resolution = label_resolution

    def __call__(
        self, episode: Episode, rng: np.random.Generator | None = None, pipeline: str = "flip_rot90"
    ) -> dict[str, Any]:
        """The episode's tensors; with ``rng`` (training) every image goes through ``pipeline``."""

        def load(image_id: str, class_id: int) -> tuple[np.ndarray, np.ndarray]:
            image = self.adapter.load_image(self.split, image_id)
            mask = binary_mask(self.adapter.load_mask(self.split, image_id), class_id)
            return image, mask

        q_raw, q_mask = load(episode.query_id, episode.class_id)
        query = augmented_tensors(q_raw, q_mask, self.image_size, pipeline, rng)
        supports = [
            augmented_tensors(*load(s, episode.support_class), self.image_size, pipeline, rng)
            for s in episode.support_ids
        ]
        item = {
            "query_img": query[0],
            "query_mask": query[1],
            "support_imgs": torch.stack([i for i, _ in supports]),
            "support_masks": torch.stack([m for _, m in supports]),
            "class_id": torch.tensor(episode.class_id),
            "episode_id": torch.tensor(episode.episode_id),
        }
        if rng is not None or self.label_resolution != "original":
            item["query_label"] = item["query_mask"]
        else:
            item["query_label"] = mask_tensor(q_mask, None)
        return item


class TrainEpisodes(Dataset):
    """Map-style dataset: item ``i`` is training episode ``i`` (augmented), whatever the worker."""

    def __init__(self, sampler: TrainEpisodeSampler, image_size: int, augment: str, length: int) -> None:
        if augment not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation pipeline {augment!r}; known: {', '.join(AUGMENTATIONS)}")
        self.sampler = sampler
        self.tensors = EpisodeTensors(sampler.adapter, sampler.split, image_size, "input")
        self.augment = augment
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        rng = self.sampler.augmentation(index) if self.augment != "none" else None
        item = self.tensors(self.sampler.episode(index), rng, self.augment)
        del item["query_label"]
        return item


class ManifestEpisodes(Dataset):
    """Map-style dataset over the episodes of a saved manifest (no augmentation)."""

    def __init__(
        self, manifest: EpisodeManifest, adapter: ImageSource, image_size: int, label_resolution: str
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
