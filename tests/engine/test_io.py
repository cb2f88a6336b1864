"""The TIFF helpers of ``engine.io``: layout inference, reading errors, atomic writes, listing."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_unet.engine.io import (
    ImageReadError,
    infer_layout,
    list_images,
    read_tiff,
    write_labels,
    write_tiff,
)


@pytest.mark.parametrize(
    ("shape", "axes", "kwargs", "expected"),
    [
        ((64, 64), "YX", {}, (None, False)),
        ((64, 64, 3), "YXS", {}, (2, False)),
        ((3, 64, 64), "CYX", {}, (0, False)),
        ((10, 64, 64), "ZYX", {}, (None, True)),
        ((10, 64, 64), "QYX", {}, (None, True)),
        ((64, 64, 3), "QQQ", {}, (2, False)),
        ((2, 64, 64), "QYX", {"in_channels": 2}, (0, False)),
        ((64, 64, 2), "QYX", {"in_channels": 2}, (2, False)),
        ((3, 64, 64), "QYX", {}, (None, True)),
        ((3, 64, 64), "QYX", {"stack": False}, (0, False)),
        ((10, 64, 64), "QYX", {"channel_axis": 0}, (0, False)),
        ((64, 64, 3), "YXS", {"stack": True}, (None, True)),
        ((5, 64, 64, 3), "ZYXS", {}, (3, True)),
        ((5, 2, 64, 64), "ZCYX", {}, (1, True)),
        ((5, 2, 64, 64), "QQYX", {"in_channels": 2}, (1, True)),
    ],
)
def test_infer_layout(shape, axes, kwargs, expected):
    assert infer_layout(shape, axes, **kwargs) == expected


@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [
        ((64, 64), {"channel_axis": 0}),
        ((64, 64), {"stack": True}),
        ((10, 64, 64), {"channel_axis": 0, "stack": True}),
        ((10, 64, 64), {"stack": False}),
        ((5, 64, 64, 3), {"stack": False}),
        ((5, 64, 64, 3), {"channel_axis": 0}),
        ((64, 64, 3), {"channel_axis": 5}),
    ],
)
def test_infer_layout_refuses_contradictions(shape, kwargs):
    with pytest.raises(ValueError):
        infer_layout(shape, "", **kwargs)


def test_read_tiff_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_tiff(tmp_path / "missing.tif")
    with pytest.raises(ImageReadError, match="folder"):
        read_tiff(tmp_path)
    (tmp_path / "text.tif").write_text("hello")
    with pytest.raises(ImageReadError, match="cannot read"):
        read_tiff(tmp_path / "text.tif")
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((8, 9, 3), np.uint8), photometric="rgb")
    image = read_tiff(tmp_path / "rgb.tif")
    assert image.data.shape == (8, 9, 3) and image.axes == "YXS"


def test_write_tiff_is_atomic_and_refuses_to_overwrite(tmp_path):
    path = tmp_path / "sub" / "labels.tif"
    labels = np.zeros((20, 30), np.int32)
    labels[2:5, 3:9] = 70000
    write_labels(path, labels)
    back = tifffile.imread(path)
    assert back.dtype == np.uint32 and back.max() == 70000
    with pytest.raises(FileExistsError):
        write_labels(path, labels)
    write_labels(path, labels // 10, overwrite=True)
    assert tifffile.imread(path).dtype == np.uint16

    with pytest.raises(ValueError):
        write_labels(tmp_path / "neg.tif", np.full((4, 4), -1))
    assert not (tmp_path / "neg.tif").exists()
    with pytest.raises(ValueError, match="cannot write"):
        write_tiff(tmp_path / "bad.tif", np.array([[object()]]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]  # no temporary files left
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["labels.tif"]


def test_list_images(tmp_path):
    for name in ("b.tif", "a.TIFF", ".hidden.tif", "c.png", "d.tiff"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "e.tif").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.TIFF", "b.tif", "d.tiff"]
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "nope")


def test_three_planes_of_labels_are_not_written_as_rgb(tmp_path):
    """tifffile stores an array with 3 or 4 planes before Y and X as planar RGB unless told
    otherwise: the labels of a 3-plane stack (in memory or block by block), probabilities of 3
    classes and error maps were colour images to other readers (axes 'SYX', one page)."""
    pytest.importorskip("zarr")
    from napari_unet.engine.io import write_labels, write_tiff
    from napari_unet.engine.zarr_io import write_tiff_from_array

    write_labels(tmp_path / "stack.tif", np.arange(3 * 32 * 32, dtype=np.uint16).reshape(3, 32, 32))
    write_tiff(tmp_path / "prob.tif", np.zeros((3, 32, 32), np.float32))
    write_tiff_from_array(tmp_path / "tz.tif", np.ones((2, 3, 32, 32), np.uint32), dtype="uint16")
    for name, pages in (("stack.tif", 3), ("prob.tif", 3), ("tz.tif", 6)):
        with tifffile.TiffFile(tmp_path / name) as tif:
            assert "S" not in tif.series[0].axes and len(tif.pages) == pages, name
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "stack.tif"), np.arange(3 * 32 * 32).reshape(3, 32, 32)
    )
