"""Shared checks of few-shot segmentation models: random episodes and a short learning test."""

from __future__ import annotations

import torch
from torch import nn

from fsseg.method import FewShotMethod


def make_episode(batch: int = 2, shots: int = 1, size: tuple[int, int] = (64, 64), seed: int = 0) -> dict:
    """A random episode; masks have a foreground rectangle, background and ignored pixels."""
    g = torch.Generator().manual_seed(seed)
    h, w = size

    def mask(*shape: int) -> torch.Tensor:
        # one random rectangle of foreground per image, two rows of ignored pixels
        m = torch.zeros(*shape, h, w, dtype=torch.long).view(-1, h, w)
        for i in range(m.shape[0]):
            y0, x0 = (int(v) for v in torch.randint(0, h // 2, (2,), generator=g))
            dy, dx = (int(v) for v in torch.randint(h // 4, h // 2, (2,), generator=g))
            m[i, y0 : y0 + dy, x0 : x0 + dx] = 1
        m[:, :2, :] = 255
        return m.view(*shape, h, w)

    return {
        "query_img": torch.randn(batch, 3, h, w, generator=g),
        "query_mask": mask(batch),
        "support_imgs": torch.randn(batch, shots, 3, h, w, generator=g),
        "support_masks": mask(batch, shots),
        "class_id": torch.zeros(batch, dtype=torch.long),
    }


def assert_a_few_steps_lower_the_loss(model: FewShotMethod) -> None:
    """Eight Adam steps on an easy episode must cut the evaluation-mode loss by a fifth."""
    episode = make_episode(batch=2, shots=1, seed=3)
    # Learnable in a few steps: foreground pixels are brighter in query and support alike.
    episode["query_img"] = 0.3 * episode["query_img"] + 2.0 * (episode["query_mask"] == 1)[:, None]
    episode["support_imgs"] = (
        0.3 * episode["support_imgs"] + 2.0 * (episode["support_masks"] == 1)[:, :, None]
    )
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            return model.loss(model(episode), episode)["loss"].item()

    before = eval_loss()
    model.train()
    for _ in range(8):
        optimizer.zero_grad()
        model.loss(model(episode), episode)["loss"].backward()
        optimizer.step()
    assert eval_loss() < 0.8 * before


def assert_prior_gain_reparametrises(
    plain: FewShotMethod, gained: FewShotMethod, gain: float, prior_columns: list[nn.Conv2d]
) -> None:
    """``gained`` (``prior_gain`` = ``gain``, same initial weights as ``plain``) is the same network as
    ``plain`` once the weight column that reads the prior, the last input channel of each of
    ``prior_columns`` (convs of ``gained``), is divided by ``gain``; before that its logits differ."""
    episode = make_episode(batch=2, shots=1, seed=5)
    plain.eval()
    gained.eval()
    with torch.no_grad():
        reference = plain(episode)["logits"]
        assert not torch.allclose(gained(episode)["logits"], reference, rtol=1e-4, atol=1e-5)
        for conv in prior_columns:
            conv.weight[:, -1] /= gain
        torch.testing.assert_close(gained(episode)["logits"], reference, rtol=1e-4, atol=1e-5)
