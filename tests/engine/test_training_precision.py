"""Mixed precision in training: bfloat16 autocast on CPUs that compute it in hardware."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.engine import device
from napari_unet.engine.device import autocast_dtype, bf16_in_cpuinfo
from napari_unet.engine.events import drive
from napari_unet.engine.model import UNet, UNetConfig
from napari_unet.engine.synthetic import synthetic_nuclei
from napari_unet.engine.training import TrainConfig, iter_train

ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n"
ZEN3 = "processor\t: 0\nflags\t\t: fpu sse2 avx2\n"
SAPPHIRE = "flags\t\t: avx512f amx_bf16 amx_tile\n"


def test_the_cpuinfo_flags_decide():
    assert bf16_in_cpuinfo(ZEN4) and bf16_in_cpuinfo(SAPPHIRE)
    assert not bf16_in_cpuinfo(ZEN3)
    assert not bf16_in_cpuinfo("")  # no flags line (not Linux, or an unusual kernel)
    # a flag that only contains the letters is not the unit
    assert not bf16_in_cpuinfo("flags\t: avx512_bf16x\n")


def test_autocast_type_per_device(monkeypatch):
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, amp=False) is None
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert autocast_dtype(cpu, amp=True) is torch.bfloat16
    assert autocast_dtype(cpu, amp=False) is None
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    assert autocast_dtype(cpu, amp=True) is None
    assert autocast_dtype(torch.device("meta"), amp=True) is None


def _train(amp: bool, steps: int = 3):
    image, labels = synthetic_nuclei((96, 96), n_cells=8, diameter=14, rng=1)
    torch.manual_seed(0)
    model = UNet(UNetConfig(depth=2, base_channels=8, norm="batch"))
    config = TrainConfig(steps=steps, tile_size=48, batch_size=2, sample_every=0, val_fraction=0,
                         amp=amp)
    result = drive(iter_train(model, image, labels, config=config, device="cpu"))
    return result


def test_bf16_training_on_the_cpu_learns_in_float32_weights(monkeypatch):
    """With the hardware flag (forced here; autocast works on any CPU, only slower without it)
    the steps run in bfloat16: the losses differ from float32's in the low bits, stay finite
    and fall, and the weights the file gets stay float32."""
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    mixed = _train(amp=True, steps=12)
    full = _train(amp=False, steps=12)
    loss_mixed = [h["loss"] for h in mixed.history if "loss" in h]
    loss_full = [h["loss"] for h in full.history if "loss" in h]
    assert np.isfinite(loss_mixed).all()
    assert loss_mixed != loss_full
    assert loss_mixed[0] == pytest.approx(loss_full[0], rel=0.05)
    assert np.mean(loss_mixed[-4:]) < loss_mixed[0]
    assert all(p.dtype == torch.float32 for p in mixed.model.parameters())
    assert all(b.dtype in (torch.float32, torch.int64) for b in mixed.model.buffers())


def test_float32_training_is_unchanged_without_the_unit(monkeypatch):
    """Without the hardware unit amp=True trains in float32: the same losses as amp=False."""
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    on = [h["loss"] for h in _train(amp=True).history if "loss" in h]
    off = [h["loss"] for h in _train(amp=False).history if "loss" in h]
    assert on == off
