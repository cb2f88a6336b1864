"""Weighted pixel-wise cross-entropy (eq. 1) and center cropping."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_unet.engine.losses import center_crop, weighted_cross_entropy


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 6, 5, generator=gen, requires_grad=True)
    target = torch.randint(0, 3, (2, 10, 9), generator=gen)
    weights = torch.rand(2, 10, 9, generator=gen)
    return logits, target, weights


def test_uniform_weights_equal_plain_cross_entropy(batch):
    logits, target, _ = batch
    cropped = target[:, 2:8, 2:7]
    expected = F.cross_entropy(logits, cropped)
    ones = torch.ones(target.shape)
    torch.testing.assert_close(weighted_cross_entropy(logits, target, ones), expected)
    torch.testing.assert_close(weighted_cross_entropy(logits, target), expected)


def test_hand_computed_two_pixels():
    # pixel a: logits (0, log 3) -> p(class 1) = 3/4; pixel b: logits (0, 0) -> p(class 0) = 1/2
    logits = torch.tensor([[[[0.0, 0.0]], [[math.log(3.0), 0.0]]]])
    target = torch.tensor([[[1, 0]]])
    weights = torch.tensor([[[3.0, 1.0]]])
    expected = (3 * -math.log(0.75) + 1 * -math.log(0.5)) / 4
    assert weighted_cross_entropy(logits, target, weights).item() == pytest.approx(expected, rel=1e-6)


def test_weighted_mean_matches_manual(batch):
    logits, target, weights = batch
    t, w = target[:, 2:8, 2:7], weights[:, 2:8, 2:7]
    nll = F.cross_entropy(logits, t, reduction="none")
    expected = (nll * w).sum() / w.sum()
    torch.testing.assert_close(weighted_cross_entropy(logits, target, weights), expected)


def test_zero_weight_pixels_do_not_count(batch):
    logits, target, weights = batch
    weights = weights.clone()
    weights[:, :, :5] = 0  # after cropping, columns 2-4 of the output are ignored
    base = weighted_cross_entropy(logits, target, weights)
    other_target = target.clone()
    other_target[:, :, :5] = (target[:, :, :5] + 1) % 3
    other_logits = logits.detach().clone()
    other_logits[..., :3] += 100.0
    assert weighted_cross_entropy(other_logits, other_target, weights).item() == pytest.approx(
        base.item(), rel=1e-6
    )
    base.backward()
    assert logits.grad[..., :3].abs().max() == 0
    assert logits.grad[..., 3:].abs().max() > 0


def test_all_zero_weights_give_zero_loss_with_gradient(batch):
    logits, target, weights = batch
    loss = weighted_cross_entropy(logits, target, torch.zeros_like(weights))
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().max() == 0


def test_scaling_the_weights_does_not_change_the_loss(batch):
    logits, target, weights = batch
    a = weighted_cross_entropy(logits, target, weights)
    b = weighted_cross_entropy(logits, target, 7.5 * weights)
    torch.testing.assert_close(a, b)


def test_center_crop_numpy_and_torch():
    a = np.arange(7 * 8).reshape(7, 8)
    c = center_crop(a, (3, 4))
    np.testing.assert_array_equal(c, a[2:5, 2:6])
    np.testing.assert_array_equal(center_crop(a, (6, 8)), a[0:6])  # odd difference: drop the end
    t = torch.arange(2 * 7 * 8).reshape(2, 7, 8)
    assert torch.equal(center_crop(t, (3, 4)), t[:, 2:5, 2:6])
    assert center_crop(a, (7, 8)).shape == (7, 8)
    with pytest.raises(ValueError, match="larger"):
        center_crop(a, (9, 8))


def test_rejects_bad_shapes(batch):
    logits, target, weights = batch
    with pytest.raises(ValueError, match="logits"):
        weighted_cross_entropy(logits[0], target, weights)
    with pytest.raises(ValueError, match="target"):
        weighted_cross_entropy(logits, target[0], weights)
    with pytest.raises(ValueError, match="larger"):
        weighted_cross_entropy(logits, target[:, :4, :4], weights[:, :4, :4])
