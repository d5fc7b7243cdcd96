"""4D correlations between query and support feature maps, and the convolutions that squeeze them.

A 4D correlation tensor is laid out ``[N, C, Hq, Wq, Hs, Ws]``: query positions first, support
positions last (HSNet's layout). These are the building blocks of HSNet (Min et al., ICCV 2021) and of
the methods that extend it (SCCNet, MGCL, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CORRELATION_EPS = 1e-5
"""Added to the feature norms before the cosine (HSNet ``model/base/correlation.py``)."""


def cosine_correlation_4d(
    query: torch.Tensor, support: torch.Tensor, eps: float = CORRELATION_EPS
) -> torch.Tensor:
    """Cosine similarity of every query position with every support position, clamped at 0.

    ``query`` [B, C, Hq, Wq] and ``support`` [B, K, C, Hs, Ws] (K supports per query) give
    [B, K, Hq, Wq, Hs, Ws]. Each feature vector is divided by (its L2 norm + ``eps``), so an all-zero
    (masked-out) support vector has similarity 0 with everything.
    """
    b, _, hq, wq = query.shape
    k, hs, ws = support.shape[1], support.shape[-2], support.shape[-1]
    q = query.flatten(2)
    q = q / (q.norm(dim=1, keepdim=True) + eps)
    s = support.flatten(3)
    s = s / (s.norm(dim=2, keepdim=True) + eps)
    corr = torch.einsum("bcq,bkcs->bkqs", q, s)
    return corr.clamp(min=0).view(b, k, hq, wq, hs, ws)


def resize_4d(x: torch.Tensor, query_size: tuple[int, int], support_size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (``align_corners=True``) of the query and/or support dimensions of a 4D tensor;
    dimensions already at their size are left untouched."""
    n, c, hq, wq, hs, ws = x.shape
    if (hq, wq) != tuple(query_size):
        x = x.permute(0, 4, 5, 1, 2, 3).reshape(n * hs * ws, c, hq, wq)
        x = F.interpolate(x, size=query_size, mode="bilinear", align_corners=True)
        hq, wq = query_size
        x = x.view(n, hs, ws, c, hq, wq).permute(0, 3, 4, 5, 1, 2)
    if (hs, ws) != tuple(support_size):
        x = x.permute(0, 2, 3, 1, 4, 5).reshape(n * hq * wq, c, hs, ws)
        x = F.interpolate(x, size=support_size, mode="bilinear", align_corners=True)
        hs, ws = support_size
        x = x.view(n, hq, wq, c, hs, ws).permute(0, 3, 1, 2, 4, 5)
    return x.contiguous()


def _cpu_bf16_unsafe(x: torch.Tensor, conv: nn.Conv2d) -> bool:
    """Whether ``conv`` on ``x`` is a strided convolution, under CPU autocast, with a kernel larger than the
    input: the case whose bf16 weight gradient oneDNN gets wrong (see :class:`CenterPivotConv4d`)."""
    return (
        x.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and max(conv.stride) > 1
        and min(x.shape[-2:]) < max(conv.kernel_size)
    )


class CenterPivotConv4d(nn.Module):
    """Center-pivot 4D convolution (HSNet, Sec. 3.3): a 4D kernel that is non-zero only on the two
    planes through its centre, so it factors into two 2D convolutions.

    ``query_conv`` convolves the query dimensions at each (strided) support position and
    ``support_conv`` the support dimensions at each query position; the output is their sum (both carry
    a bias). Padding is ``kernel_size // 2`` on every dimension; ``support_stride`` strides the support
    dimensions only, and the query convolution then runs at the support positions the strided support
    kernel is centred on (0, s, 2s, ...). Equal to a dense 4D convolution whose kernel is
    ``W_q[dq] δ(ds) + W_s[ds] δ(dq)`` (tested against one).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, support_stride: int = 1
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"CenterPivotConv4d: kernel_size must be odd, got {kernel_size}")
        pad = kernel_size // 2
        self.support_stride = support_stride
        self.query_conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=pad)
        self.support_conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride=support_stride, padding=pad
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, hq, wq, hs, ws = x.shape
        stride = self.support_stride
        pivots = x[..., ::stride, ::stride] if stride > 1 else x
        ps, pw = pivots.shape[-2:]
        over_query = pivots.permute(0, 4, 5, 1, 2, 3).reshape(n * ps * pw, c, hq, wq)
        over_query = self.query_conv(over_query)
        c_out = over_query.shape[1]
        over_query = over_query.view(n, ps, pw, c_out, hq, wq).permute(0, 3, 4, 5, 1, 2)
        over_support = x.permute(0, 2, 3, 1, 4, 5).reshape(n * hq * wq, c, hs, ws)
        if _cpu_bf16_unsafe(over_support, self.support_conv):
            # measured with torch 2.14 (oneDNN): under CPU bf16 autocast, the weight gradient of a strided
            # conv whose kernel is larger than its input (HSNet's squeeze of 2×2 and 1×1 support maps at
            # 64 px) holds NaNs in about half the calls; these tensors are tiny, so they run in fp32
            with torch.autocast("cpu", enabled=False):
                over_support = self.support_conv(over_support.float())
        else:
            over_support = self.support_conv(over_support)
        over_support = over_support.view(n, hq, wq, c_out, ps, pw).permute(0, 3, 1, 2, 4, 5)
        return over_query + over_support
