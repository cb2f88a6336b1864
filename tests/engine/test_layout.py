"""The input layout: every accepted layout becomes (P, C, Y, X); the rest is refused in one
sentence, the same for prediction, segmentation and training."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.engine.layout import as_planes, check_shape


@pytest.mark.parametrize(
    ("shape", "kwargs", "planes"),
    [
        ((6, 7), {}, (1, 1, 6, 7)),
        ((6, 7, 3), {"channel_axis": -1, "in_channels": 3}, (1, 3, 6, 7)),
        ((3, 6, 7), {"channel_axis": 0, "in_channels": 3}, (1, 3, 6, 7)),
        ((4, 6, 7), {"stack": True}, (4, 1, 6, 7)),
        ((4, 6, 7, 2), {"stack": True, "channel_axis": -1, "in_channels": 2}, (4, 2, 6, 7)),
        ((4, 2, 6, 7), {"stack": True, "channel_axis": 1, "in_channels": 2}, (4, 2, 6, 7)),
    ],
)
def test_every_layout_becomes_planes_of_channels(shape, kwargs, planes):
    image = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape)
    kwargs = {"in_channels": 1, **kwargs}
    out = as_planes(image, **kwargs)
    assert out.shape == planes and out.dtype == np.uint16
    assert np.shares_memory(out, image)  # a view, no copy
    # channel c of plane p is the image's channel c of plane p
    axis = kwargs.get("channel_axis")
    expected = image if axis is None else np.moveaxis(image, axis, -3)
    np.testing.assert_array_equal(
        out.reshape(-1), np.ascontiguousarray(expected.reshape(planes)).reshape(-1)
    )


@pytest.mark.parametrize(
    ("image", "kwargs", "message"),
    [
        (np.zeros((2, 40, 40)), {}, "channel_axis=... for channels or stack=True"),
        (np.zeros((40, 40, 3)), {"channel_axis": -1}, "expects 1 channel but the image has 3"),
        (np.zeros((40, 40)), {"in_channels": 3}, "expects 3 channels but the image has 1; pass"),
        (np.zeros((40, 40)), {"stack": True}, r"\(P, Y, X\) was expected"),
        (np.zeros((40, 40, 3)), {"channel_axis": 5}, "out of range"),
        (np.zeros((2, 40, 40)), {"channel_axis": 0, "stack": True}, r"\(P, Y, X, C\)"),
        (np.zeros((2, 40, 40, 1)), {"channel_axis": 0, "stack": True}, "plane axis"),
        (np.full((40, 40), np.nan), {}, "NaN or infinite"),
        (np.zeros((40, 40), complex), {}, "real-valued"),
        (np.array([["a", "b"], ["c", "d"]]), {}, "real-valued"),
        (np.zeros((0, 40)), {}, "empty"),
        (np.ones((1, 9)), {}, "too small: 1x9"),
    ],
)
def test_what_does_not_fit_is_refused_in_one_sentence(image, kwargs, message):
    with pytest.raises(ValueError, match=message):
        as_planes(image, **{"in_channels": 1, **kwargs})


def test_values_are_only_read_when_asked():
    image = np.full((8, 8), np.inf)
    assert as_planes(image, in_channels=1, check_values=False).shape == (1, 1, 8, 8)


def test_check_shape_reads_no_pixels():
    check_shape((5, 4000, 4000), in_channels=1, stack=True)
    with pytest.raises(ValueError, match="expects 3 channels"):
        check_shape((64, 64), in_channels=3)


def test_gray_for_model_averages_rgb_for_a_one_channel_model():
    from napari_unet.engine.layout import gray_for_model

    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 30, 60, 90, 255
    gray, axis = gray_for_model(rgba, channel_axis=-1, in_channels=1)
    assert axis is None and gray.dtype == np.float32 and np.all(gray == 60)  # alpha dropped
    planar = np.moveaxis(rgba[..., :3], -1, 0)
    assert np.all(gray_for_model(planar, channel_axis=0, in_channels=1)[0] == 60)
    same, axis = gray_for_model(rgba, channel_axis=-1, in_channels=4)  # a 4-channel model
    assert same is rgba and axis == -1
    two = np.zeros((4, 5, 2))
    assert gray_for_model(two, channel_axis=-1, in_channels=1)[0] is two  # not RGB: refused later


def test_as_instances_numbers_a_masks_regions_and_passes_labels_through():
    from napari_unet.engine._overlaps import _check_pair
    from napari_unet.engine.errors import error_map
    from napari_unet.engine.layout import as_instances
    from napari_unet.engine.metrics import evaluate

    # one square over two planes: two cells read as planes, one read as a volume
    mask = np.zeros((2, 4, 4), bool)
    mask[:, 1:3, 1:3] = True
    per_plane = as_instances(mask)
    assert per_plane.dtype == np.int32 and set(np.unique(per_plane)) == {0, 1, 2}
    assert set(np.unique(as_instances(mask, planes=False))) == {0, 1}
    # the matching reads a bool array as a volume, the scores and the error map plane by plane
    assert np.array_equal(_check_pair(mask, mask)[0], as_instances(mask, planes=False))
    ids = np.where(mask, 7, 0).astype(np.uint16)
    assert evaluate(mask, ids) == evaluate(per_plane, ids)
    assert np.array_equal(error_map(mask, ids).codes, error_map(per_plane, ids).codes)
    # integer labels are the same array, not a copy
    assert as_instances(ids) is ids
