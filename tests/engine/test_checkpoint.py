"""Checkpoints: round trip, atomic writes, and a clear error for every bad file, hostile ones included."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_unet.engine import checkpoint_write
from napari_unet.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    FORMAT_VERSION,
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    read_checkpoint_metadata,
    save_checkpoint,
)
from napari_unet.engine.diameter import model_diameter
from napari_unet.engine.model import UNet, UNetConfig


def _tiny(**overrides) -> UNet:
    torch.manual_seed(0)
    config = UNetConfig(**{"depth": 2, "base_channels": 4, "padding": "same", **overrides})
    return UNet(config)


@pytest.fixture
def saved(tmp_path) -> tuple[Path, UNet]:
    model = _tiny()
    path = save_checkpoint(
        tmp_path / "model.pt",
        model,
        normalization={"low": np.float32(1.0), "high": 99.8},
        training={"steps": 10, "lr": np.float64(1e-3), "diameter": 17.5, "optimizer": "adam"},
        history=[{"step": 1, "loss": 0.9}, {"step": 2, "loss": 0.7}],
        extra={"name": "tiny", "notes": None, "range": (np.float32(0.5), 812.0)},
    )
    return path, model


def _payload(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


class _MakesFolder:
    """Unpickling this object calls os.mkdir(marker): stand-in for arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


# ------------------------------------------------------------------------------------------
# round trip


def test_round_trip_restores_model_and_metadata(saved):
    path, model = saved
    assert path.name == "model.pt"
    loaded, info = load_checkpoint(path)
    assert isinstance(info, Checkpoint)
    assert info.config == model.config
    assert info.format_version == FORMAT_VERSION
    assert info.path == path
    assert info.normalization == {"low": 1.0, "high": 99.8}
    assert info.training["lr"] == pytest.approx(1e-3)
    assert type(info.training["lr"]) is float
    assert info.history == [{"step": 1, "loss": 0.9}, {"step": 2, "loss": 0.7}]
    assert info.extra == {"name": "tiny", "notes": None, "range": [0.5, 812.0]}
    assert info.saved_at and info.napari_unet_version
    assert not loaded.training
    state, original = loaded.state_dict(), model.state_dict()
    assert state.keys() == original.keys()
    for key in state:
        assert torch.equal(state[key], original[key]), key
    x = torch.rand(1, 1, 16, 16)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    # the payload is plain data: config beside the weights, not inside the state_dict
    payload = _payload(path)
    assert payload["format"] == CHECKPOINT_FORMAT
    assert payload["config"] == model.config.to_dict()
    assert all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())


def test_read_metadata_without_building_the_model(saved):
    path, model = saved
    info = read_checkpoint_metadata(path)
    assert info.config == model.config
    assert info.in_channels == 1
    assert info.n_classes == 3
    assert info.history[-1]["loss"] == 0.7


def test_no_temporary_files_are_left(saved):
    path, _ = saved
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]


def test_metadata_must_be_plain_data(tmp_path):
    model = _tiny()
    target = tmp_path / "m.pt"
    with pytest.raises(TypeError, match=r"normalization\['mean'\] is a numpy.ndarray"):
        save_checkpoint(target, model, normalization={"mean": np.zeros(3)})
    with pytest.raises(TypeError, match="keys must be strings"):
        save_checkpoint(target, model, training={1: 2})
    with pytest.raises(TypeError, match="list of dicts"):
        save_checkpoint(target, model, history=[1.0, 2.0])
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        save_checkpoint(target, model, extra={"w": torch.zeros(2)})
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_the_previous_file_intact(saved, monkeypatch):
    path, _ = saved
    before = path.read_bytes()

    def crash(obj, fh, *args, **kwargs):
        fh.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_write.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, _tiny(base_channels=8), extra={"name": "new"})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]
    assert load_checkpoint(path)[1].extra["name"] == "tiny"


def test_saving_over_an_existing_file_replaces_it(saved):
    path, _ = saved
    save_checkpoint(path, _tiny(base_channels=8), extra={"name": "second"})
    _, info = load_checkpoint(path)
    assert info.config.base_channels == 8
    assert info.extra == {"name": "second"}


# ------------------------------------------------------------------------------------------
# hostile files


def test_the_hostile_pickle_is_live_when_loaded_unsafely(tmp_path):
    # guards the tests below: this payload really runs code if a loader lets it
    marker = tmp_path / "pwned"
    torch.save(_MakesFolder(marker), tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", ["torch_save", "raw_pickle", "inside_checkpoint"])
def test_hostile_pickle_is_refused_and_runs_nothing(tmp_path, saved, kind):
    marker = tmp_path / "pwned"
    evil = _MakesFolder(marker)
    path = tmp_path / "evil.pt"
    if kind == "torch_save":
        torch.save(evil, path)
    elif kind == "raw_pickle":
        path.write_bytes(pickle.dumps(evil))
    else:
        payload = _payload(saved[0])
        payload["extra"] = {"name": evil}
        torch.save(payload, path)
    for loader in (load_checkpoint, read_checkpoint_metadata):
        with pytest.raises(CheckpointError, match=r"refused.*could run code") as err:
            loader(path)
        assert str(path) in str(err.value)
    assert not marker.exists()


# ------------------------------------------------------------------------------------------
# broken and foreign files


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="not a file"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.95])
def test_truncated_file(saved, tmp_path, fraction):
    data = saved[0].read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match=r"truncated|corrupt") as err:
        load_checkpoint(path)
    assert "truncated.pt" in str(err.value)


def test_corrupt_weights_fail_their_checksum(saved, tmp_path):
    path, model = saved
    data = bytearray(path.read_bytes())
    weight = model.state_dict()["head.weight"].numpy().tobytes()
    start = bytes(data).find(weight)
    assert start > 0
    data[start : start + 4] = b"\x7f\x7f\x7f\x7f"
    broken = tmp_path / "corrupt.pt"
    broken.write_bytes(bytes(data))
    # the file still unpickles: only the checksum reveals the damage
    assert isinstance(_payload(broken), dict)
    with pytest.raises(CheckpointError, match=r"corrupt.*checksum"):
        load_checkpoint(broken)


@pytest.mark.parametrize(
    "content",
    [b"hello, this is a text file\n", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), bytes(1000)],
    ids=["text", "png", "zeros"],
)
def test_not_a_torch_file(tmp_path, content):
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"junk\.pt") as err:
        load_checkpoint(path)
    assert "not a PyTorch file" in str(err.value) or "refused" in str(err.value)


def _write(tmp_path: Path, payload) -> Path:
    path = tmp_path / "crafted.pt"
    torch.save(payload, path)
    return path


def test_foreign_and_incompatible_payloads(saved, tmp_path):
    good = _payload(saved[0])
    cases = [
        ([1, 2, 3], "holds a list"),
        (good["state_dict"], "bare weights"),
        ({"weights": 1}, "no 'format' entry"),
        ({**good, "format": "cellpose"}, "format 'cellpose', not a napari-unet"),
        ({**good, "format_version": FORMAT_VERSION + 1}, "newer napari-unet"),
        ({**good, "format_version": "1"}, "invalid format version"),
        ({**good, "config": {**good["config"], "depth": 0}}, "invalid model configuration"),
        ({**good, "config": {**good["config"], "colour": "red"}}, "invalid model configuration"),
        ({**good, "state_dict": {}}, "holds no weights"),
        ({**good, "history": {"step": 1}}, "malformed 'history'"),
    ]
    for payload, message in cases:
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(_write(tmp_path, payload))


def test_weights_that_do_not_fit_the_config(saved, tmp_path):
    good = _payload(saved[0])
    del good["weights_sha256"]  # a checksum is optional; the shapes are still checked
    wider = {**good, "config": {**good["config"], "base_channels": 8}}
    with pytest.raises(CheckpointError, match=r"do not fit.*wrong shape"):
        load_checkpoint(_write(tmp_path, wider))
    state = dict(good["state_dict"])
    state.pop("head.bias")
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"1 missing.*head\.bias.*1 unexpected"):
        load_checkpoint(_write(tmp_path, {**good, "state_dict": state}))


def test_non_finite_weights_are_refused(tmp_path):
    model = _tiny()
    with torch.no_grad():
        model.head.weight[0, 0] = float("nan")
    path = save_checkpoint(tmp_path / "nan.pt", model)
    with pytest.raises(CheckpointError, match="not finite"):
        load_checkpoint(path)


def test_channel_mismatch(tmp_path):
    path = save_checkpoint(tmp_path / "rgb.pt", _tiny(in_channels=3))
    model, info = load_checkpoint(path, expect_in_channels=3)
    assert info.in_channels == 3
    assert model.config.in_channels == 3
    with pytest.raises(
        CheckpointError, match="trained for 3 input channels, the image has 1 channel"
    ):
        load_checkpoint(path, expect_in_channels=1)
    with pytest.raises(CheckpointError, match="trained for 3 input channels"):
        read_checkpoint_metadata(path, expect_in_channels=2)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


# -- the training diameter ----------------------------------------------------------------------


def test_the_diameter_is_a_typed_entry(tmp_path):
    path = save_checkpoint(tmp_path / "d.pt", _tiny_for_diameter(), diameter=np.float32(17.5))
    checkpoint = read_checkpoint_metadata(path)
    assert checkpoint.diameter == 17.5 and type(checkpoint.diameter) is float
    assert "diameter" not in checkpoint.extra
    assert read_checkpoint_metadata(save_checkpoint(tmp_path / "n.pt", _tiny_for_diameter())).diameter is None
    for bad in (0, -3, float("nan"), "big", True):
        with pytest.raises(ValueError, match="positive number of pixels"):
            save_checkpoint(tmp_path / "bad.pt", _tiny_for_diameter(), diameter=bad)
    assert not (tmp_path / "bad.pt").exists()


@pytest.mark.parametrize(
    ("legacy", "expected"), [(17, 17.0), (24.5, 24.5), ("big", None), (-3, None), (None, None)]
)
def test_older_files_kept_the_diameter_in_extra(tmp_path, legacy, expected):
    """Files written before the diameter had its own entry still load; nonsense is unknown."""
    net = _tiny_for_diameter()
    path = tmp_path / "old.pt"
    payload = {
        "format": "napari-unet",
        "format_version": 1,
        "config": net.config.to_dict(),
        "state_dict": net.state_dict(),
        "extra": {"diameter": legacy, "name": "old"},
    }
    torch.save(payload, path)
    _, checkpoint = load_checkpoint(path)
    assert checkpoint.diameter == expected and checkpoint.extra == {"name": "old"}
    assert model_diameter(checkpoint) == expected


def _tiny_for_diameter():
    return UNet(UNetConfig(depth=1, base_channels=2))
