"""Shared few-shot building blocks: the PFENet prior, masked pooling, GloRe, losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fsseg.models.glore import GloReUnit, GraphConv
from fsseg.models.ops import deep_supervision_loss, masked_average_pool, resize, segmentation_ce
from fsseg.models.prior import high_level_features, resize_mask, training_free_prior


def _prior_by_loops(
    query: torch.Tensor, support: torch.Tensor, mask_small: torch.Tensor, eps: float
) -> torch.Tensor:
    """PFENet's prior pixel by pixel: query [B,C,h,w], support [B,K,C,hs,ws], mask_small [B,K,hs,ws]."""
    b, k, _, hs, ws = support.shape
    h, w = query.shape[-2:]
    out = torch.zeros(b, 1, h, w, dtype=torch.float64)
    for n in range(b):
        for shot in range(k):
            best = torch.zeros(h, w, dtype=torch.float64)
            for qy in range(h):
                for qx in range(w):
                    q = query[n, :, qy, qx].double()
                    values = []
                    for sy in range(hs):
                        for sx in range(ws):
                            s = support[n, shot, :, sy, sx].double() * mask_small[n, shot, sy, sx].double()
                            values.append(
                                float(s @ q) / (math.sqrt(float(s @ s)) * math.sqrt(float(q @ q)) + eps)
                            )
                    best[qy, qx] = max(values)
            lo, hi = best.min(), best.max()
            out[n, 0] += (best - lo) / (hi - lo + eps)
    return out / k


@pytest.mark.parametrize(("mask_size", "fg_fraction"), [((4, 5), 0.6), ((13, 17), 0.3), ((13, 17), 1.0)])
def test_prior_matches_pixel_loops(mask_size: tuple[int, int], fg_fraction: float) -> None:
    torch.manual_seed(0)
    b, k, c = 2, 3, 5
    # signed features: the shortcut over masked-out support pixels must not rely on ReLU outputs
    query = torch.randn(b, c, 3, 4)
    support = torch.randn(b, k, c, 4, 5)
    support_fg = (torch.rand(b, k, *mask_size) < fg_fraction).float()
    support_fg[0, 1] = 0  # one shot without foreground
    got = training_free_prior(query, support, support_fg)
    # The reference resizes the mask like the official code: bilinear, align_corners=True.
    small = F.interpolate(support_fg.flatten(0, 1)[:, None], size=(4, 5), mode="bilinear", align_corners=True)
    expected = _prior_by_loops(query, support, small.view(b, k, 4, 5), eps=1e-7)
    assert got.shape == (b, 1, 3, 4)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-5)


def test_prior_of_empty_mask_is_zero_and_finite() -> None:
    query, support = torch.rand(1, 4, 3, 3), torch.rand(1, 1, 4, 3, 3)
    prior = training_free_prior(query, support, torch.zeros(1, 1, 9, 9))
    assert torch.isfinite(prior).all() and prior.abs().max() == 0


def test_high_level_features_masks_support_input() -> None:
    torch.manual_seed(0)
    query_prev, support_prev = torch.randn(2, 3, 4, 4), torch.randn(4, 3, 4, 4)
    support_fg = (torch.rand(4, 16, 16) > 0.5).float()
    q, s = high_level_features(nn.Identity(), query_prev, support_prev, support_fg)
    torch.testing.assert_close(q, query_prev)
    torch.testing.assert_close(s, support_prev * resize_mask(support_fg, (4, 4)))
    _, s_plain = high_level_features(nn.Identity(), query_prev, support_prev, None)
    torch.testing.assert_close(s_plain, support_prev)


def test_high_level_features_reuses_a_known_query_output() -> None:
    torch.manual_seed(0)
    stage = nn.Conv2d(3, 5, 3, padding=1).eval()
    query_prev, support_prev = torch.randn(2, 3, 4, 4), torch.randn(4, 3, 4, 4)
    support_fg = (torch.rand(4, 16, 16) > 0.5).float()
    with torch.no_grad():
        q_full, s_full = high_level_features(stage, query_prev, support_prev, support_fg)
        known = stage(query_prev)
        q, s = high_level_features(stage, query_prev, support_prev, support_fg, query_high=known)
    assert q is known  # not computed again
    torch.testing.assert_close(q, q_full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(s, s_full, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("align_corners", [True, False])
def test_masked_average_pool_equals_pooling_upsampled_features(align_corners: bool) -> None:
    torch.manual_seed(0)
    features = torch.randn(3, 6, 5, 7)
    mask = (torch.rand(3, 20, 27) > 0.6).float()
    got = masked_average_pool(features, mask, eps=5e-4, align_corners=align_corners)
    up = F.interpolate(features, size=(20, 27), mode="bilinear", align_corners=align_corners)
    expected = (up * mask[:, None]).sum(dim=(2, 3)) / (mask.sum(dim=(1, 2))[:, None] + 5e-4)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_masked_average_pool_at_feature_size_is_weighted_gap() -> None:
    features, mask = torch.randn(2, 4, 6, 6), torch.rand(2, 6, 6)
    expected = (features * mask[:, None]).sum(dim=(2, 3)) / (mask.sum(dim=(1, 2))[:, None] + 5e-4)
    torch.testing.assert_close(masked_average_pool(features, mask, eps=5e-4), expected)


def test_glore_shapes_and_identity_at_init() -> None:
    torch.manual_seed(0)
    unit = GloReUnit(channels=24, num_node=6)
    assert unit.num_state == 12
    x = torch.randn(3, 24, 7, 9)
    for mode in (True, False):
        unit.train(mode)
        out = unit(x)
        assert out.shape == x.shape
        torch.testing.assert_close(out, x, rtol=0, atol=0)


def test_glore_trains_once_the_blocker_opens() -> None:
    torch.manual_seed(0)
    unit = GloReUnit(channels=8, num_node=4)
    with torch.no_grad():
        unit.blocker.weight.fill_(1.0)
    x = torch.randn(2, 8, 5, 5)
    out = unit(x)
    assert not torch.allclose(out, x)
    out.square().sum().backward()
    for name, param in unit.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_graph_conv_matches_formula() -> None:
    torch.manual_seed(0)
    gcn = GraphConv(num_state=6, num_node=4)
    v = torch.randn(2, 6, 4)  # [N, states, nodes]
    w_node, b_node = gcn.node_conv.weight[:, :, 0], gcn.node_conv.bias
    w_state = gcn.state_conv.weight[:, :, 0]
    # node mixing (learned adjacency) along the node axis, residual, ReLU, then the state update
    expected = w_state @ torch.relu(v @ w_node.t() + b_node + v)
    torch.testing.assert_close(gcn(v), expected, rtol=1e-5, atol=1e-6)


def test_resize_is_identity_at_same_size() -> None:
    x = torch.randn(1, 2, 5, 5)
    assert resize(x, (5, 5)) is x
    assert resize(x, (9, 9)).shape == (1, 2, 9, 9)


def test_segmentation_ce_ignores_255_and_survives_all_ignored() -> None:
    logits = torch.randn(2, 2, 4, 4, requires_grad=True)
    target = torch.randint(0, 2, (2, 8, 8))
    target[:, :2] = 255
    up = F.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=True)
    torch.testing.assert_close(segmentation_ce(logits, target), F.cross_entropy(up, target, ignore_index=255))
    loss = segmentation_ce(logits, torch.full((2, 8, 8), 255))
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(logits.grad).all()


def test_deep_supervision_loss_weights_mean_aux() -> None:
    torch.manual_seed(0)
    target = torch.randint(0, 2, (1, 8, 8))
    outputs = {"logits": torch.randn(1, 2, 8, 8), "aux_logits_0": torch.randn(1, 2, 4, 4)}
    outputs["aux_logits_1"] = torch.randn(1, 2, 2, 2)
    terms = deep_supervision_loss(outputs, target, aux_weight=0.5)
    aux = (
        segmentation_ce(outputs["aux_logits_0"], target) + segmentation_ce(outputs["aux_logits_1"], target)
    ) / 2
    torch.testing.assert_close(terms["aux"], aux)
    torch.testing.assert_close(terms["loss"], terms["main"] + 0.5 * aux)
