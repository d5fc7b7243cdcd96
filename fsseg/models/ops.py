"""Few-shot building blocks shared by the methods: masked pooling, cosine maps, the PFENet prior."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=64)
def _interp_matrix(
    n_in: int, n_out: int, align_corners: bool, device: str, dtype: torch.dtype
) -> torch.Tensor:
    """[n_out, n_in] matrix of 1-D linear interpolation, as used by torch's bilinear resize."""
    eye = torch.eye(n_in, dtype=torch.float64).unsqueeze(0)  # [1, n_in (channels), n_in]
    mat = F.interpolate(eye, size=n_out, mode="linear", align_corners=align_corners)[0]  # [n_in, n_out]
    return mat.t().contiguous().to(device=device, dtype=dtype)


def downsample_mask_adjoint(mask: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    """Adjoint of bilinear upsampling from ``size`` to ``mask``'s size, applied to ``mask`` [..., H, W].

    For any feature map f of ``size``: ``sum(up(f) * mask) == sum(f * adjoint(mask))``; so pooling
    upsampled features equals pooling low-resolution features with this weight map, and the
    full-resolution feature map is never built.
    """
    (h, w), (big_h, big_w) = size, mask.shape[-2:]
    rows = _interp_matrix(h, big_h, align_corners, str(mask.device), mask.dtype)  # [H, h]
    cols = _interp_matrix(w, big_w, align_corners, str(mask.device), mask.dtype)  # [W, w]
    return rows.t() @ mask @ cols


def masked_average_pool(
    features: torch.Tensor, mask: torch.Tensor, eps: float = 1e-5, align_corners: bool = False
) -> torch.Tensor:
    """Masked average of ``features`` [N, C, h, w] bilinearly upsampled to ``mask`` [N, H, W].

    Returns [N, C] = sum_p up(f)(p) m(p) / (sum_p m(p) + eps), computed at feature resolution.
    """
    mask = mask.to(features.dtype)
    if mask.shape[-2:] == features.shape[-2:]:
        weights = mask
    else:
        weights = downsample_mask_adjoint(mask, features.shape[-2:], align_corners)
    pooled = torch.einsum("nchw,nhw->nc", features, weights)
    return pooled / (mask.sum(dim=(-2, -1)).unsqueeze(-1) + eps)


def cosine_map(features: torch.Tensor, prototypes: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity of each pixel of ``features`` [N, C, h, w] with ``prototypes`` [N, P, C].

    Returns [N, P, h, w].
    """
    f = F.normalize(features, dim=1, eps=eps)
    p = F.normalize(prototypes, dim=-1, eps=eps)
    return torch.einsum("nchw,npc->nphw", f, p)


def foreground(mask: torch.Tensor) -> torch.Tensor:
    """Float foreground indicator of a {0, 1, 255} mask (ignored pixels count as neither)."""
    return (mask == 1).float()


def background(mask: torch.Tensor) -> torch.Tensor:
    return (mask == 0).float()


def minmax_normalise(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Scale each map of ``x`` [N, 1, h, w] (or [N, h, w]) to [0, 1] over its spatial positions."""
    flat = x.flatten(start_dim=-2)
    lo = flat.min(dim=-1, keepdim=True).values.unsqueeze(-1)
    hi = flat.max(dim=-1, keepdim=True).values.unsqueeze(-1)
    return (x - lo) / (hi - lo + eps)


def resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize of ``x`` [N, C, h, w] with ``align_corners=True`` (the PFENet convention).

    Returns ``x`` itself when it already has ``size``: the resize would be the identity anyway.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def segmentation_ce(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int = 255, fg_weight: float = 1.0
) -> torch.Tensor:
    """Cross-entropy of ``logits`` [B, 2, h, w], bilinearly resized to ``target`` [B, H, W] if needed.

    Pixels equal to ``ignore_index`` are excluded. A batch whose pixels are all ignored gives a zero
    loss that still depends on ``logits`` (``F.cross_entropy`` would return NaN and poison training).
    """
    logits = resize(logits, target.shape[-2:])
    if not bool((target != ignore_index).any()):
        return logits.sum() * 0.0
    weight = None if fg_weight == 1.0 else logits.new_tensor([1.0, fg_weight])
    return F.cross_entropy(logits, target.long(), ignore_index=ignore_index, weight=weight)


def deep_supervision_loss(
    outputs: dict[str, torch.Tensor],
    target: torch.Tensor,
    aux_weight: float,
    aux_prefix: str = "aux_logits_",
    fg_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """``main`` CE on ``outputs["logits"]`` plus ``aux_weight`` × the mean CE of the auxiliary logits.

    Auxiliary logits are the entries whose key starts with ``aux_prefix`` (any resolution; they are
    resized to the label like the main logits, as PFENet does). ``fg_weight`` weighs foreground pixels
    in every CE term (1 = the official, unweighted loss). Returns ``loss``, ``main`` and ``aux``.
    """
    main = segmentation_ce(outputs["logits"], target, fg_weight=fg_weight)
    aux_keys = sorted(k for k in outputs if k.startswith(aux_prefix))
    if aux_keys:
        aux = torch.stack([segmentation_ce(outputs[k], target, fg_weight=fg_weight) for k in aux_keys]).mean()
    else:
        aux = main.new_zeros(())
    return {"loss": main + aux_weight * aux, "main": main.detach(), "aux": aux.detach()}
