"""The training-free prior of PFENet (Tian et al., TPAMI 2020), shared by PFENet and DSMF-Net.

For every query pixel the prior is the highest cosine similarity between its high-level (layer4)
feature and any foreground pixel of the support's high-level features; each map is min-max
normalised over the query pixels and the maps of the K shots are averaged. The maths follows the
official implementation (dvlab-research/PFENet, ``model/PFENet.py``):

* the support mask is resized to the feature size bilinearly with ``align_corners=True`` and
  multiplies the support features (soft mask at object borders);
* cosine = <s, q> / (|s| |q| + eps) with eps = 1e-7 added to the *product* of the norms;
* min-max normalisation over the query pixels with the same eps, per shot, before averaging.

The official code also masks the support's layer3 output *before* it enters layer4
(:func:`high_level_features` with ``mask_input=True``), so background context does not leak into the
support's high-level features through layer4's receptive field.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fsseg.errors import ConfigError
from fsseg.models.ops import minmax_normalise, resize
from fsseg.models.receptive import same_size_radius

PRIOR_EPS = 1e-7


def resize_mask(mask: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Resize a float mask [N, H, W] or [N, 1, H, W] to [N, 1, *size] (bilinear, align_corners=True)."""
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    return resize(mask.float(), size)


def high_level_features(
    stage: nn.Module,
    query_prev: torch.Tensor,
    support_prev: torch.Tensor,
    support_fg: torch.Tensor | None,
    query_high: torch.Tensor | None = None,
    *,
    needed_fg: torch.Tensor | None = None,
    run: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the high-level ``stage`` (e.g. layer4) on query and support features.

    ``query_prev`` [B, C, h, w] and ``support_prev`` [B*K, C, h, w] are the previous stage's outputs.
    When ``support_fg`` [B*K, H, W] (float foreground) is given, the support input is multiplied by
    the mask resized to its size first, as the official PFENet does. ``query_high``, the query's
    output of ``stage`` when the caller already has it (the high stage is also one of the stages the
    method reads, as when the backbone is cut there), is returned as it is instead of being computed
    a second time. ``run`` runs the stage (default: ``stage`` itself; a backbone passes its
    :meth:`run_stage`). Returns (query, support) outputs.

    ``needed_fg`` [B*K, H, W]: the caller reads the support's output only where this mask, resized to
    the output like :func:`training_free_prior` resizes it, is non-zero (the prior's case). Then, for
    a size-preserving stage in eval mode (:func:`~fsseg.models.receptive.same_size_radius`), each
    support is run on the box around those pixels grown by the stage's receptive reach: exactly the
    same values on the box (up to the rounding of a differently sized convolution), zero outside
    it, and no run at all for an empty mask. Where the boxes cover the whole map, one batch is run.
    """
    if support_fg is not None:
        support_prev = support_prev * resize_mask(support_fg, support_prev.shape[-2:])
    run = stage if run is None else run
    boxes = _support_boxes(stage, support_prev, needed_fg) if needed_fg is not None else None
    if boxes is None:
        if query_high is not None:
            return query_high, run(support_prev)
        out = run(torch.cat([query_prev, support_prev], dim=0))
        return out[: query_prev.shape[0]], out[query_prev.shape[0] :]
    whole = [n for n, box in enumerate(boxes) if box == "whole"]
    batch = ([query_prev] if query_high is None else []) + ([support_prev[whole]] if whole else [])
    out = run(torch.cat(batch, dim=0)) if batch else None
    if query_high is None:
        assert out is not None
        query_high, out = out[: query_prev.shape[0]], out[query_prev.shape[0] :]
    support_high: torch.Tensor | None = None
    for n, box in enumerate(boxes):
        if box is None or box == "whole":
            continue
        (top, bottom, left, right), (c_top, c_bottom, c_left, c_right) = box
        part = run(support_prev[n : n + 1, :, c_top:c_bottom, c_left:c_right])
        if support_high is None:
            support_high = part.new_zeros(support_prev.shape[0], part.shape[1], *support_prev.shape[-2:])
        support_high[n, :, top:bottom, left:right] = part[
            0, :, top - c_top : bottom - c_top, left - c_left : right - c_left
        ]
    if support_high is None:
        support_high = query_high.new_zeros(
            support_prev.shape[0], query_high.shape[1], *support_prev.shape[-2:]
        )
    if whole:
        assert out is not None
        support_high[whole] = out
    return query_high, support_high


Box = tuple[tuple[int, int, int, int], tuple[int, int, int, int]]


def _support_boxes(
    stage: nn.Module, support_prev: torch.Tensor, needed_fg: torch.Tensor
) -> list[Box | str | None] | None:
    """Per support: ``None`` (nothing needed), ``"whole"`` (its box covers the map) or (box, crop) as
    (top, bottom, left, right) pairs; ``None`` overall when cropping does not apply or saves nothing."""
    if any(m.training for m in stage.modules()):
        return None  # BatchNorm on batch statistics (or dropout) would see other inputs
    radius = same_size_radius(stage)
    if radius is None:
        return None
    h, w = support_prev.shape[-2:]
    needed = resize_mask(needed_fg, (h, w))[:, 0] != 0  # what training_free_prior reads
    rows, cols = needed.any(dim=2), needed.any(dim=1)  # [N, h], [N, w]
    boxes: list[Box | str | None] = []
    for n in range(needed.shape[0]):
        r, c = rows[n].nonzero().squeeze(1), cols[n].nonzero().squeeze(1)
        if r.numel() == 0:
            boxes.append(None)
            continue
        top, bottom, left, right = int(r[0]), int(r[-1]) + 1, int(c[0]), int(c[-1]) + 1
        crop = (max(0, top - radius), min(h, bottom + radius), max(0, left - radius), min(w, right + radius))
        boxes.append("whole" if crop == (0, h, 0, w) else ((top, bottom, left, right), crop))
    if all(box == "whole" for box in boxes):
        return None
    return boxes


def training_free_prior(
    query_high: torch.Tensor, support_high: torch.Tensor, support_fg: torch.Tensor, eps: float = PRIOR_EPS
) -> torch.Tensor:
    """The PFENet prior map [B, 1, h, w] at the resolution of ``query_high``.

    Args:
        query_high: query high-level features [B, C, h, w].
        support_high: support high-level features [B, K, C, hs, ws].
        support_fg: support foreground masks [B, K, H, W] (float, any resolution; 1 = foreground).
        eps: added to the product of the norms and to the min-max range, as in the official code.
    """
    b, k, _, hs, ws = support_high.shape
    h, w = query_high.shape[-2:]
    q = query_high.flatten(2)  # [B, C, Nq]
    q_norm = q.norm(dim=1, keepdim=True)  # [B, 1, Nq]
    prior = query_high.new_zeros(b, 1, h * w)
    for shot in range(k):
        mask = resize_mask(support_fg[:, shot], (hs, ws)).flatten(1)  # [B, Ns]
        support = support_high[:, shot].flatten(2)  # [B, C, Ns]
        for n in range(b):
            # A support pixel outside the (soft) mask has zero features, hence similarity exactly
            # 0 / (0 + eps) = 0 with every query pixel. So only the pixels inside the mask need the
            # [Ns, Nq] similarity matrix, and the outside ones contribute a single 0 to the max: the
            # same numbers as the official dense computation at a fraction of its cost (objects cover
            # a small part of an aerial image) and memory.
            inside = mask[n].nonzero().squeeze(1)
            if inside.numel() == 0:
                continue  # all similarities are 0; min-max normalising gives 0
            s = (support[n][:, inside] * mask[n, inside]).t()  # [n_inside, C]
            similarity = (s @ q[n]) / (s.norm(dim=1, keepdim=True) * q_norm[n] + eps)  # [n_inside, Nq]
            best = similarity.max(dim=0).values
            if inside.numel() < mask.shape[1]:
                best = best.clamp_min(0.0)
            prior[n] += minmax_normalise(best.view(1, h, w), eps=eps).view(1, -1)
    return prior.view(b, 1, h, w) / k


def prior_stages(backbone: nn.Module, used: tuple[str, ...], high_stage: str, where: str) -> tuple[str, str]:
    """Resolve the prior's high-level stage and the stage before it, and drop the stages after the
    deepest one used.

    ``high_stage`` "auto" is the deepest stage the backbone keeps (layer4 unless ``backbone.max_stage``
    cuts it). ``used`` are the method's other stages; ``where`` names the config section in errors.
    """
    stages = list(backbone.stages)
    high = stages[-1] if high_stage == "auto" else high_stage
    for name in (*used, high):
        if name not in stages:
            raise ConfigError(f"{where}: stage {name!r} is not one of the backbone's {stages}")
    if stages.index(high) == 0:
        raise ConfigError(f"{where}.high_stage: the prior needs a stage after the first one")
    backbone.truncate(max((*used, high), key=stages.index))
    return high, stages[stages.index(high) - 1]
