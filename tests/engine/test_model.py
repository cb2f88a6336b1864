"""The U-Net: the paper's architecture, valid-size arithmetic, He initialisation, config round-trip."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from napari_unet.engine.model import (
    UNet,
    UNetConfig,
    border,
    count_conv_layers,
    count_parameters,
    inference_copy,
    output_size,
    valid_input_size,
)


def test_paper_net_has_23_conv_layers_and_31_million_parameters():
    model = UNet(UNetConfig.paper())
    assert count_conv_layers(model) == 23
    assert round(count_parameters(model) / 1e6, 1) == 31.0


def test_presets():
    paper = UNetConfig.paper()
    assert (paper.depth, paper.base_channels, paper.dropout, paper.norm, paper.padding) == (4, 64, 0.5, None, "valid")
    default = UNetConfig.default()
    assert (default.depth, default.base_channels, default.norm, default.dropout) == (4, 16, "batch", 0.0)
    assert (default.padding, default.n_classes, default.in_channels) == ("valid", 3, 1)
    assert default.seamless and UNetConfig.paper().seamless
    assert not UNetConfig.default(norm="group").seamless
    norms = [m for m in UNet(UNetConfig.default(base_channels=4, norm="group")).modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(m.num_channels // m.num_groups <= 8 for m in norms)
    assert {m.num_channels // m.num_groups for m in norms} == {4, 8}


def test_paper_sizes():
    assert output_size(572, 4) == 388
    assert border(4) == 92
    assert valid_input_size(570, 4) == 572
    assert valid_input_size(572, 4) == 572
    assert output_size(64, 4, padding="same") == 64


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_valid_size_arithmetic_against_brute_force(depth):
    def accepted(n):
        try:
            output_size(n, depth)
        except ValueError:
            return False
        return True

    valid = [n for n in range(1, 400) if accepted(n)]
    assert valid, "some size must be valid"
    assert all(b - a == 2**depth for a, b in itertools.pairwise(valid))
    for n in valid:
        assert output_size(n, depth) == n - 2 * border(depth)
    for size in range(1, valid[-1] + 1):
        expected = next(n for n in valid if n >= size)
        assert valid_input_size(size, depth) == expected


def test_invalid_sizes_raise_with_a_hint():
    with pytest.raises(ValueError, match="nearest valid size is 572"):
        output_size(571, 4)
    with pytest.raises(ValueError, match="multiples of 16"):
        output_size(40, 4, padding="same")
    with pytest.raises(ValueError, match="depth"):
        output_size(572, 0)
    with pytest.raises(ValueError, match="padding"):
        output_size(572, 4, padding="full")


@pytest.mark.parametrize("norm", [None, "batch", "group"])
def test_forward_shapes_valid(norm):
    config = UNetConfig(depth=2, base_channels=4, n_classes=2, in_channels=2, norm=norm)
    model = UNet(config).eval()
    rows, cols = valid_input_size(30, 2), valid_input_size(61, 2)
    y = model(torch.zeros(2, 2, rows, cols))
    assert y.shape == (2, 2, output_size(rows, 2), output_size(cols, 2))
    with pytest.raises(ValueError, match="nearest valid size"):
        model(torch.zeros(1, 2, rows + 1, cols))
    with pytest.raises(ValueError, match=r"\(N, 2, H, W\)"):
        model(torch.zeros(1, 1, rows, cols))


def test_forward_shapes_same():
    model = UNet(UNetConfig(depth=3, base_channels=4, padding="same")).eval()
    assert model(torch.zeros(1, 1, 24, 40)).shape == (1, 3, 24, 40)


def test_backward_reaches_first_layer():
    model = UNet(UNetConfig(depth=2, base_channels=4, norm="group", dropout=0.5))
    n = valid_input_size(20, 2)
    model(torch.randn(1, 1, n, n)).sum().backward()
    first = model.down[0][0].weight
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_dropout_only_in_training():
    model = UNet(UNetConfig(depth=2, base_channels=4, dropout=0.5))
    x = torch.randn(1, 1, valid_input_size(30, 2), valid_input_size(30, 2))
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model(x), model(x))


def test_he_initialisation():
    torch.manual_seed(0)
    model = UNet(UNetConfig(depth=1, base_channels=64, in_channels=3))
    conv = model.up[0][3]  # 3x3, 64 -> 64
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 64)), rel=0.05)
    assert conv.weight.mean().item() == pytest.approx(0.0, abs=0.005)
    assert torch.count_nonzero(conv.bias) == 0
    first = model.down[0][0]  # 3x3, 3 -> 64
    assert first.weight.std().item() == pytest.approx(math.sqrt(2 / (9 * 3)), rel=0.1)
    upconv = model.upconv[0]  # 2x2 up-convolution, 128 -> 64
    assert upconv.weight.std().item() == pytest.approx(math.sqrt(2 / 128), rel=0.05)


def test_config_round_trips_and_rebuilds_the_same_network():
    config = UNetConfig(in_channels=2, n_classes=2, depth=2, base_channels=8, padding="same", norm="batch", dropout=0.25)
    data = json.loads(json.dumps(config.to_dict()))
    again = UNetConfig.from_dict(data)
    assert again == config
    assert UNetConfig.from_json(config.to_json()) == config
    a, b = UNet(config).eval(), UNet(again).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 2, 16, 24)
    assert torch.equal(a(x), b(x))
    assert b.config == config


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"depth": 4, "width": 3}, "unknown UNetConfig keys: width"),
        ({"depth": 0}, "depth"),
        ({"padding": "full"}, "padding"),
        ({"norm": "layer"}, "norm"),
        ({"dropout": 1.5}, "dropout"),
        ({"n_classes": 1}, "n_classes"),
        ({"base_channels": 2.5}, "base_channels"),
    ],
)
def test_from_dict_rejects_bad_configs(data, match):
    with pytest.raises(ValueError, match=match):
        UNetConfig.from_dict(data)


def test_from_json_rejects_garbage():
    with pytest.raises(ValueError, match="JSON"):
        UNetConfig.from_json("{not json")


def test_logits_are_finite_for_random_weights():
    model = UNet(UNetConfig(depth=3, base_channels=8)).eval()
    n = valid_input_size(40, 3)
    with torch.inference_mode():
        y = model(torch.rand(1, 1, n, n))
    assert np.isfinite(y.numpy()).all() and y.std() > 0


@pytest.mark.parametrize("norm", ["batch", None, "group"])
def test_the_inference_copy_predicts_like_the_model_in_eval_mode(norm):
    """Batch norms folded into their convolutions: the same logits to float rounding, no
    batch-norm layer left, and the model itself untouched (still training, same weights)."""
    torch.manual_seed(0)
    model = UNet(UNetConfig.default(depth=2, base_channels=8, norm=norm))
    x = torch.randn(2, 1, 60, 60)
    with torch.no_grad():
        model(torch.randn(4, 1, 60, 60) * 3 + 1)  # running statistics far from the identity
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 2.0)
                m.bias.uniform_(-1.0, 1.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    net = inference_copy(model)
    assert model.training and not net.training
    with torch.no_grad():
        expected = model.eval()(x)
        got = net(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert float((expected - got).abs().max()) < 1e-4 * float(expected.abs().max())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
