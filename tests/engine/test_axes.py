"""The axes of an image (engine/axes.py, engine/axes_layout.py): detection, checking, and the
way to the engine's planes and back."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.engine.axes import (
    axes_choices,
    axes_from_layout,
    check_axes,
    detect_axes,
    other_readings,
)
from napari_unet.engine.axes_layout import AxesLayout, guess_axes


@pytest.mark.parametrize(
    ("shape", "kwargs", "expected"),
    [
        ((64, 64), {}, "YX"),
        ((32, 32, 2), {"file_axes": "QYX"}, "YXZ"),  # planes last, not 32 planes of 32x2
        ((32, 32, 2), {"in_channels": 2}, "YXC"),
        ((64, 64, 3), {"file_axes": "QQQ"}, "YXC"),  # RGB saved without the flag
        ((64, 64, 4), {}, "YXC"),
        ((3, 64, 64), {"file_axes": "QYX"}, "ZYX"),
        ((2, 64, 64), {"in_channels": 2}, "CYX"),
        ((3, 64, 64), {"file_axes": "CYX"}, "CYX"),  # the file's own axes win
        ((64, 64, 3), {"file_axes": "YXS"}, "YXC"),
        ((10, 64, 64), {"file_axes": "TYX"}, "TYX"),
        ((5, 64, 64, 3), {"rgb": True}, "ZYXC"),
        ((5, 2, 64, 64), {}, "ZCYX"),
        ((5, 6, 64, 64), {}, "TZYX"),
        ((2, 5, 64, 64, 3), {}, "TZYXC"),
    ],
)
def test_detect_axes(shape, kwargs, expected):
    assert detect_axes(shape, **kwargs) == expected
    assert axes_choices(shape, expected)[0] == expected


@pytest.mark.parametrize(
    ("axes", "ndim", "words"),
    [
        ("YX", 3, "2 axes but the image has 3"),
        ("YXQ", 3, "contain Q"),
        ("YYX", 3, "Y more than once"),
        ("ZXC", 3, "both Y"),
    ],
)
def test_check_axes_refuses_in_one_sentence(axes, ndim, words):
    with pytest.raises(ValueError, match=words):
        check_axes(axes, ndim)


def test_axes_from_the_channel_axis_and_stack_arguments():
    assert axes_from_layout(2, channel_axis=None, stack=False) == "YX"
    assert axes_from_layout(3, channel_axis=-1, stack=False) == "YXC"
    assert axes_from_layout(4, channel_axis=1, stack=True) == "ZCYX"


@pytest.mark.parametrize(
    ("shape", "axes"),
    [
        ((32, 30, 2), "YXZ"),
        ((4, 32, 3, 30), "ZYCX"),
        ((2, 3, 32, 30), "TZYX"),
        ((3, 32, 30), "CYX"),
        ((30, 32), "XY"),
    ],
)
def test_layout_round_trip(shape, axes):
    rng = np.random.default_rng(0)
    image = rng.random(shape)
    layout = AxesLayout(shape, axes)
    engine, channel_axis = layout.to_engine(image)
    assert engine.shape == layout.engine_shape()
    assert (channel_axis is None) == ("C" not in axes)
    if layout.stack:
        assert engine.shape[0] == layout.n_planes
    # a label image computed per plane from the engine's array comes back in the image's axes
    labels = engine[..., 0] if channel_axis is not None else engine
    back = layout.from_engine(labels)
    assert back.shape == layout.label_shape
    expected = np.take(image, 0, axis=layout.channel_axis) if "C" in axes else image
    np.testing.assert_array_equal(back, expected)
    np.testing.assert_array_equal(layout.labels_to_engine(back), labels)


def test_planes_last_become_engine_planes():
    image = np.zeros((8, 9, 2))
    image[..., 1] = 1.0
    engine, _ = AxesLayout(image.shape, "YXZ").to_engine(image)
    assert engine.shape == (2, 8, 9)
    assert engine[0].max() == 0 and engine[1].min() == 1


def test_rgb_is_gray_for_a_one_channel_model_only_with_colours_last():
    rgb = np.zeros((8, 9, 3), np.uint8)
    rgb[..., 0] = 90
    image, channel_axis = AxesLayout(rgb.shape, "YXC").for_model(rgb, in_channels=1)
    assert channel_axis is None and image.shape == (8, 9) and image.max() == 30
    AxesLayout(rgb.shape, "YXC").check_model(in_channels=1)
    planar = AxesLayout((3, 8, 9), "CYX")
    with pytest.raises(ValueError, match="expects 1 channel"):
        planar.check_model(in_channels=1)


@pytest.mark.parametrize(
    ("shape", "kwargs", "axes", "others"),
    [
        ((2, 3, 64, 64), {}, "TZYX", ["ZCYX", "CZYX"]),  # a one-channel model reads planes
        ((3, 3, 64, 64), {"in_channels": 3}, "ZCYX", ["CZYX"]),  # either axis may be channels
        ((2, 3, 64, 64), {"in_channels": 3}, "ZCYX", []),  # only one axis of 3
        ((20, 3, 64, 64), {}, "ZCYX", []),  # one small axis
        ((2, 3, 64, 64), {"file_axes": "ZCYX"}, "ZCYX", []),  # the file says
        ((2, 3, 64, 64, 3), {"rgb": True}, "TZYXC", []),
    ],
)
def test_a_guess_between_small_axes_is_said(shape, kwargs, axes, others):
    """Two small axes before Y and X were read as ZCYX without a word, also where the model
    could not read that; :func:`guess_axes` picks a reading the model can read and says so."""
    chosen, note = guess_axes(shape, **kwargs)
    assert chosen == axes
    if not others:
        assert note == "" and other_readings(shape, **kwargs) == []
        return
    assert f"read as {axes}" in note and all(a in note for a in others)
    assert set(other_readings(shape, **kwargs)) | {detect_axes(shape, **kwargs)} == {axes, *others}
    AxesLayout(shape, chosen).check_model(in_channels=kwargs.get("in_channels", 1))
