"""Bounds on model files: configurations refused from their numbers, metadata checked at load."""

from __future__ import annotations

import pytest
import torch

from napari_unet.engine import limits
from napari_unet.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from napari_unet.engine.model import UNet, UNetConfig, count_parameters


@pytest.mark.parametrize(
    "config",
    [
        UNetConfig.paper(),
        UNetConfig.default(),
        UNetConfig(depth=1, base_channels=3, in_channels=2, n_classes=2, norm="batch"),
        UNetConfig(depth=3, base_channels=5, padding="same", norm="group", n_classes=4),
    ],
    ids=["paper", "default", "batch", "group"],
)
def test_parameter_count_from_the_config_matches_the_network(config):
    assert limits.parameter_count(config) == count_parameters(UNet(config))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"depth": 40}, "depth must be at most 6"),
        ({"in_channels": 10_000_000}, "in_channels must be at most"),
        ({"n_classes": 100_000}, "n_classes must be at most"),
        ({"base_channels": 4096}, "base_channels must be at most"),
        ({"depth": 5, "base_channels": 256}, r"M parameters, more than"),
    ],
)
def test_configs_beyond_the_bounds_are_refused_before_any_tensor(overrides, message):
    with pytest.raises(ValueError, match=message):
        UNetConfig(**overrides)


def _crafted(tmp_path, config: dict, state_dict: dict, **entries) -> str:
    """A file shaped like a checkpoint, written without save_checkpoint's checks."""
    path = tmp_path / "crafted.pt"
    payload = {"format": "napari-unet", "format_version": 1, "config": config}
    torch.save({**payload, "state_dict": state_dict, **entries}, path)
    return path


@pytest.mark.parametrize(
    "overrides", [{"depth": 40}, {"depth": 5, "base_channels": 256}, {"in_channels": 10**7}]
)
def test_a_crafted_config_is_refused_at_load(tmp_path, overrides):
    small = UNet(UNetConfig(depth=1, base_channels=2))
    config = {**small.config.to_dict(), **overrides}
    path = _crafted(tmp_path, config, small.state_dict())
    with pytest.raises(CheckpointError, match="invalid model configuration"):
        load_checkpoint(path)


def test_weights_that_do_not_fit_are_found_before_the_network_is_built(tmp_path, monkeypatch):
    """A paper-sized config with a few bytes of weights: only a shapes-only network is made."""
    built_on = []
    original = UNet.reset_parameters

    def spy(self):
        built_on.append(next(self.parameters()).device.type)
        original(self)

    monkeypatch.setattr(UNet, "reset_parameters", spy)
    small = UNet(UNetConfig(depth=1, base_channels=2))
    built_on.clear()
    path = _crafted(tmp_path, UNetConfig.paper().to_dict(), small.state_dict())
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path)
    assert built_on == ["meta"]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"diameter": 1e-9}, "at least 1"),
        ({"diameter": float("inf")}, "positive number of pixels"),
        ({"normalization": {"low": 50.0, "high": 10.0}}, "0 <= low < high <= 100"),
        ({"normalization": {"low": "1"}}, "must be a number"),
        ({"normalization": {"mean": 0.5}}, "unknown normalization keys"),
    ],
)
def test_metadata_is_checked_at_load(tmp_path, entries, message):
    net = UNet(UNetConfig(depth=1, base_channels=2))
    path = _crafted(tmp_path, net.config.to_dict(), net.state_dict(), **entries)
    with pytest.raises(CheckpointError, match=f"invalid metadata: .*{message}"):
        load_checkpoint(path)


def test_bad_metadata_is_not_saved(tmp_path):
    net = UNet(UNetConfig(depth=1, base_channels=2))
    with pytest.raises(ValueError, match="0 <= low < high <= 100"):
        save_checkpoint(tmp_path / "m.pt", net, normalization={"low": 99.0, "high": 1.0})
    with pytest.raises(ValueError, match="at least 1"):
        save_checkpoint(tmp_path / "m.pt", net, diameter=0.5)
    assert list(tmp_path.iterdir()) == []
