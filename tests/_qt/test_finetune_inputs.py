"""What the Fine-tune panel reads from the layers, and what it refuses or warns about: the
plane on screen, channels, annotated regions, labels that teach the wrong thing."""

from __future__ import annotations

import numpy as np
import pytest
from finetune_helpers import GEOMETRY, finetune_panel, paint

from napari_unet._qt._session import ModelEntry, session_for


def test_errors_reach_the_user(viewer_with_image, nuclei_image, wait_job, errors):
    viewer = viewer_with_image
    session = session_for(viewer)
    start_entry = session.current
    widget = finetune_panel(viewer, steps=3)

    assert widget.start() is None  # no Labels layer yet
    assert "Labels layer" in errors[-1]
    assert widget.save_model() is None
    assert "fine-tune a model first" in errors[-1]

    empty = paint(viewer, np.zeros((128, 128)), name="empty")
    widget.labels.value = empty
    assert widget.start() is None
    assert errors[-1].startswith("Fine-tuning failed: no painted cells in 'empty'")

    small = paint(viewer, nuclei_image[1][:64, :64], name="small")
    widget.labels.value = small
    assert widget.start() is None
    assert "different shapes" in errors[-1] and "(128, 128)" in errors[-1]

    painted = paint(viewer, nuclei_image[1])
    widget.labels.value = painted
    widget.regions.value = viewer.add_shapes(name="no regions yet")
    assert widget.start() is None
    assert "has no shape on this plane" in errors[-1]
    widget.regions.value = None

    widget.image.value = viewer.add_image(np.zeros((2, 128, 128), np.uint8), name="two")
    widget.axes.value = "CYX"  # two channels for a one-channel model
    n_errors = len(errors)
    job = widget.start()
    wait_job(job)
    assert job.error is not None and len(errors) == n_errors + 1
    assert errors[-1].startswith("Fine-tuning failed:") and "channel" in errors[-1]
    assert session.current is start_entry  # nothing was kept
    assert widget.start_button.isEnabled() and not widget.stop_button.isEnabled()
    assert "failed" in widget.status.value
    assert "painted weight map" in viewer.layers  # shown before the model saw the image
    assert np.array_equal(painted.data, nuclei_image[1]) and not empty.data.any()


def test_the_current_plane_of_a_stack_is_used(viewer_with_image, nuclei_image, stack_image):
    viewer = viewer_with_image
    stack = viewer.add_image(stack_image[:3], name="stack")
    painted = np.zeros((3, 128, 128), np.int32)
    painted[1] = nuclei_image[1]
    labels = viewer.add_labels(painted, name="stack cells")
    widget = finetune_panel(viewer, steps=3)
    widget.image.value = stack
    widget.labels.value = labels
    viewer.dims.set_current_step(0, 1)
    request = widget.training_request()
    np.testing.assert_array_equal(request.labels, nuclei_image[1])
    np.testing.assert_array_equal(np.asarray(request.image), stack_image[1])
    assert request.regions is None and request.channel_axis is None
    assert request.config.steps == 3 and request.config.tile_size == 48

    # painted on another plane than the one on screen: the refusal names the painted planes
    viewer.dims.set_current_step(0, 0)
    with pytest.raises(
        ValueError,
        match=r"no painted cells in 'stack cells' on plane \(0,\), the plane on screen; cells "
        r"are painted on plane \(1,\): show one of them",
    ):
        widget.training_request()
    labels.data = np.zeros_like(painted)
    with pytest.raises(ValueError, match=r"on plane \(0,\); paint a few cells"):
        widget.training_request()


def test_planes_on_the_last_axis_take_the_plane_on_screen(
    viewer_with_image, nuclei_image, stack_image
):
    """A (Y, X, Z) image, shown Z-sliced (dims order 2, 0, 1): axes YXZ are detected and the
    plane at the Z slider is the one trained on."""
    viewer = viewer_with_image
    data = np.moveaxis(stack_image[:2], 0, -1)  # (128, 128, 2); 3 would be taken for RGB
    layer = viewer.add_image(data, name="yxz")
    painted = paint(viewer, nuclei_image[1])
    widget = finetune_panel(viewer, steps=3)
    widget.image.value = layer
    widget.labels.value = painted
    assert widget.axes.value == "YXZ"
    viewer.dims.order = (2, 0, 1)
    viewer.dims.set_point(2, 1.0)  # Z = 1 (world and data agree for this layer)
    request = widget.training_request()
    assert request.channel_axis is None
    np.testing.assert_array_equal(np.asarray(request.image), stack_image[1])


def test_the_preview_of_a_plane_of_planes_last_lies_on_that_plane(
    viewer_with_image, stack_image, qtbot, errors
):
    """A (Y, X, Z) image previewed at Z = 1: the (Y, X) preview was added as a 2D layer, which
    napari lays on the viewer's last two axes (X and Z): across the planes, not over the plane
    previewed. Now it is that plane, in the image's axes, one pixel thick on Z."""
    viewer = viewer_with_image
    layer = viewer.add_image(np.moveaxis(stack_image[:2], 0, -1), name="yxz", scale=(2, 2, 3))
    widget = finetune_panel(viewer, steps=3)
    widget.image.value = layer
    assert widget.axes.value == "YXZ"
    viewer.dims.order = (2, 0, 1)
    viewer.dims.set_point(2, 3.0)  # Z = 1 (world 3 at a Z scale of 3)
    widget.refresh_preview()
    qtbot.waitUntil(lambda: not widget.preview.runner.busy, timeout=30_000)
    preview = viewer.layers["yxz preview labels"]
    assert preview.data.shape == (128, 128, 1)
    np.testing.assert_allclose(preview.scale, (2, 2, 3))
    np.testing.assert_allclose(preview.translate, (0, 0, 3))
    assert errors == []


def test_the_augmented_tile_of_planes_last_lies_beside_the_plane(
    viewer_with_image, nuclei_image, stack_image, wait_job, qtbot, errors
):
    """A run on (Y, X, Z) labels: its augmented tile was added as 2D layers, which napari lays
    on the viewer's last two axes (X and Z), placed by the labels' X and Z. Now the tile lies
    right of the plane trained on, in the labels' axes."""
    viewer = viewer_with_image
    layer = viewer.add_image(np.moveaxis(stack_image[:2], 0, -1), name="yxz")
    painted = np.zeros((128, 128, 2), np.int32)
    painted[:, :, 1] = nuclei_image[1]
    labels = viewer.add_labels(painted, name="yxz cells")
    widget = finetune_panel(viewer, steps=2, image=layer, labels=labels)
    viewer.dims.order = (2, 0, 1)
    viewer.dims.set_point(2, 1.0)
    wait_job(widget.start())
    qtbot.waitUntil(lambda: not widget.preview.runner.busy, timeout=30_000)
    assert errors == []
    for name in ("augmented tile", "augmented tile labels"):
        tile = viewer.layers[name]
        assert tile.ndim == 3 and tile.data.shape[2] == 1, (name, tile.data.shape)
        np.testing.assert_allclose(tile.translate, (0, 128 + 16, 1))  # right of plane Z = 1
    assert viewer.layers["augmented tile labels"].data.max() > 0


def test_labels_with_planes_last_give_the_plane_on_screen(
    viewer_with_image, nuclei_image, stack_image
):
    """(Y, X, Z) labels painted over a (Y, X, Z) image: the painted plane at the Z slider is
    read in the labels' own axes, and the run's weight map lies on that plane."""
    viewer = viewer_with_image
    layer = viewer.add_image(np.moveaxis(stack_image[:2], 0, -1), name="yxz")
    painted = np.zeros((128, 128, 2), np.int32)
    painted[:, :, 1] = nuclei_image[1]
    labels = viewer.add_labels(painted, name="yxz cells")
    widget = finetune_panel(viewer, steps=3)
    widget.image.value = layer
    widget.labels.value = labels
    viewer.dims.order = (2, 0, 1)
    viewer.dims.set_point(2, 1.0)
    request = widget.training_request()
    np.testing.assert_array_equal(request.labels, nuclei_image[1])
    np.testing.assert_array_equal(np.asarray(request.image), stack_image[1])
    assert widget.label_plane == (slice(None), slice(None), 1)
    assert request.regions is None

    # a region drawn on the plane shown (vertices in the labels' own axes: Y, X, Z = 1) counts
    # there only; one drawn on plane 0 does not
    on_plane = np.array([[10, 20, 1], [10, 60, 1], [50, 60, 1], [50, 20, 1]], float)
    elsewhere = np.array([[70, 70, 0], [70, 90, 0], [90, 90, 0], [90, 70, 0]], float)
    widget.regions.value = viewer.add_shapes(
        [on_plane, elsewhere], shape_type="rectangle", name="yxz regions"
    )
    request = widget.training_request()
    region = np.asarray(request.regions)
    assert region.shape == (128, 128)
    assert region[30, 40] and not region[5, 40] and not region[30, 70]
    assert not region[80, 80]  # drawn on plane 0
    assert 30 * 30 <= region.sum() <= 42 * 42

    viewer.dims.set_point(2, 0.0)
    with pytest.raises(
        ValueError, match=r"'yxz cells' on plane \(0,\), the plane on screen; .* plane \(1,\):"
    ):
        widget.training_request()


def test_a_channel_first_image_trains_on_all_its_channels(
    viewer_with_image, nuclei_image, wait_job, qtbot, errors
):
    """A (C, Y, X) layer with "first axis: channels": the request holds every channel of the
    plane, whichever channel the viewer shows, and a 2-channel model fine-tunes and previews."""
    import torch

    from napari_unet.engine.model import UNet, UNetConfig

    viewer = viewer_with_image
    data = np.stack([nuclei_image[0], nuclei_image[0][:, ::-1]])  # (2, 128, 128)
    two = viewer.add_image(data, name="two channels")
    painted = paint(viewer, nuclei_image[1])
    widget = finetune_panel(viewer, steps=3)
    widget.image.value = two
    widget.labels.value = painted
    assert not widget.axes.native.isHidden()  # the choice is offered for this layer
    viewer.dims.set_current_step(0, 1)  # the viewer shows the second channel

    request = widget.training_request()  # axes ZYX: planes (the default)
    assert request.channel_axis is None
    np.testing.assert_array_equal(np.asarray(request.image), data[1])

    widget.axes.value = "CYX"
    request = widget.training_request()
    assert request.channel_axis == -1
    np.testing.assert_array_equal(np.asarray(request.image), np.moveaxis(data, 0, -1))
    np.testing.assert_array_equal(request.labels, nuclei_image[1])

    torch.manual_seed(0)
    net = UNet(UNetConfig(depth=2, base_channels=4, in_channels=2))
    session_for(viewer).set_current(ModelEntry("2-channel net", lambda: net, kind="file"))
    job = widget.start()
    wait_job(job)
    assert job.error is None and errors == []
    assert widget.run.steps_done == 3
    widget.refresh_preview()
    qtbot.waitUntil(lambda: "two channels preview labels" in viewer.layers, timeout=30_000)
    assert viewer.layers["two channels preview labels"].data.shape == (128, 128)
    assert errors == []

    widget.image.value = viewer.layers["nuclei"]
    assert widget.axes.native.isHidden()  # not for a 2D layer


def test_regions_are_preselected_and_their_absence_is_warned(
    viewer_with_image, nuclei_image, wait_job, warnings_shown
):
    viewer = viewer_with_image
    paint(viewer, nuclei_image[1])
    widget = finetune_panel(viewer, steps=3)
    assert widget.regions.value is None  # no Shapes layer: (none), worded as everywhere
    assert [widget.regions.native.itemText(i) for i in range(widget.regions.native.count())] == [
        "(none)"
    ]
    shapes = viewer.add_shapes(name="regions")
    assert finetune_panel(viewer, steps=3).regions.value is shapes

    widget = finetune_panel(viewer, steps=1, regions=None)
    wait_job(widget.start())
    assert len(warnings_shown) == 1 and "no annotated regions" in warnings_shown[0]
    assert "no annotated regions" in widget.notes.value


def test_degenerate_labels_are_warned(viewer_with_image, nuclei_image, wait_job, warnings_shown):
    """Every cell painted with the same id: the user is told before the model learns it."""
    viewer = viewer_with_image
    same_id = (nuclei_image[1] > 0).astype(np.int32)
    widget = finetune_panel(viewer, steps=2)
    widget.labels.value = paint(viewer, same_id, name="one id")
    wait_job(widget.start())
    assert any("label 1 covers" in text for text in warnings_shown), warnings_shown
    assert "label 1 covers" in widget.notes.value


def test_labels_placed_elsewhere_than_the_image_are_warned(
    viewer_with_image, nuclei_image, wait_job, warnings_shown
):
    """A Labels layer of the image's shape made at scale 1 (napari's New labels with no layer
    selected) over the image at scale 0.5: the cells painted over the image lie at twice their
    pixel indices, and training paired the pixels one to one without a word."""
    viewer = viewer_with_image
    plain = viewer.add_labels(np.asarray(nuclei_image[1], np.int32), name="plain")
    widget = finetune_panel(viewer, steps=1, labels=plain, regions=None)
    (text,) = widget.training_request().warnings
    assert text.startswith("the labels 'plain' lie elsewhere than the image 'nuclei'")
    assert "scale (1, 1) against (0.5, 0.5), translate (0, 0) against (3, 4)" in text
    wait_job(widget.start())
    assert any("lie elsewhere" in t for t in warnings_shown) and "lie elsewhere" in widget.notes.value

    widget.labels.value = paint(viewer, nuclei_image[1])  # placed as the image
    assert widget.training_request().warnings == ()
    moved = paint(viewer, nuclei_image[1], name="moved")
    moved.rotate = 90
    widget.labels.value = moved
    assert "(rotate" in widget.training_request().warnings[0]


def test_lines_and_paths_are_not_annotated_regions(viewer_with_image, nuclei_image, errors):
    """A line or a path drawn in the regions layer encloses no area: it is left out (it used to
    become a one-pixel-wide region, so that almost nothing was taught); a layer of lines only
    is refused with a sentence, like an empty one."""
    from napari_unet._qt._annotations import regions_mask

    viewer = viewer_with_image
    painted = paint(viewer, nuclei_image[1])
    lines = viewer.add_shapes(
        [np.array([[10.0, 10.0], [100.0, 100.0]]), np.array([[5.0, 5.0], [5.0, 90.0], [60.0, 50.0]])],
        shape_type=["line", "path"],
        name="lines",
        **GEOMETRY,
    )
    widget = finetune_panel(viewer, steps=3, regions=lines)
    assert widget.start() is None
    assert "has no shape on this plane (lines and paths enclose no area)" in errors[-1]

    lines.add_rectangles(np.array([[0.0, 0.0], [64.0, 128.0]]))
    mask = regions_mask(lines, painted, (), (128, 128))
    expected = np.zeros((128, 128), bool)
    expected[:65, :] = True
    assert np.abs(mask.astype(int) - expected).sum() <= 128 + 1  # the rectangle alone, to its edge
    assert not mask[100, 100] and not mask[80, 80]  # on the line, below the rectangle


def test_regions_outside_the_labels_are_refused(viewer_with_image, nuclei_image, errors):
    """A region drawn outside the image (in another layer's coordinates, or far off) covers no
    pixel: the run trained silently with no annotated region at all. Now Start refuses it with
    a sentence, like a regions layer with no shape on the plane."""
    viewer = viewer_with_image
    paint(viewer, nuclei_image[1])
    outside = viewer.add_shapes(
        [np.array([[500.0, 500.0], [600.0, 600.0]])],
        shape_type="rectangle",
        name="far off",
        **GEOMETRY,
    )
    widget = finetune_panel(viewer, steps=3, regions=outside)
    assert widget.start() is None and widget.job is None
    assert errors == [
        "Fine-tuning failed: the regions of 'far off' on this plane cover no pixel of the labels "
        "'painted' (they lie outside them); draw them over the painted cells, or choose (none)."
    ]


def test_an_image_with_nan_is_refused_at_start_by_name(make_napari_viewer, nuclei_image, errors):
    """An image plane with NaN started the run, showed its weight map, and failed in the worker
    with 'image contains NaN or infinite values', naming no layer; now Start refuses it."""
    viewer = make_napari_viewer()
    image = nuclei_image[0].astype(np.float32)
    image[5, 5] = np.nan
    viewer.add_image(image, name="holey")
    viewer.add_labels(np.asarray(nuclei_image[1], np.int32), name="painted")
    widget = finetune_panel(viewer, steps=3)
    assert widget.start() is None
    assert errors == [
        "Fine-tuning failed: the image 'holey' holds NaN or infinite values on this plane; "
        "replace them (e.g. by 0) before fine-tuning."
    ]
    assert "holey weight map" not in [layer.name for layer in viewer.layers]


@pytest.mark.parametrize("kind", ["dask", "zarr"])
def test_a_lazy_image_with_nan_is_read_off_the_gui_thread(
    make_napari_viewer, nuclei_image, wait_job, errors, tmp_path, monkeypatch, kind
):
    """Start read a lazy (dask, zarr) image plane on the GUI thread to look for NaN: the panel
    froze for as long as the plane took to load. Now the job reads it and refuses it with the
    same sentence, before any weight map is shown."""
    import threading

    import dask.array as da

    image = nuclei_image[0].astype(np.float32)
    image[5, 5] = np.nan
    stack = np.stack([image, image])  # a plane of a stack, as a large lazy image would be
    if kind == "zarr":
        zarr = pytest.importorskip("zarr")
        array = zarr.create_array(
            str(tmp_path / "image.zarr"), shape=stack.shape, chunks=(1, 64, 64), dtype="f4"
        )
        array[:] = stack
        read_in = []
        real_getitem = type(array).__getitem__

        def watched(self, key):
            read_in.append(threading.current_thread())
            return real_getitem(self, key)

        monkeypatch.setattr(type(array), "__getitem__", watched)
        data = array
    else:
        read_in = []

        def read(block):
            read_in.append(threading.current_thread())
            return block

        data = da.from_array(stack, chunks=(1, 64, 64)).map_blocks(read, dtype=stack.dtype)
    viewer = make_napari_viewer()
    viewer.add_image(data, name="holey")
    viewer.add_labels(np.stack([nuclei_image[1]] * 2).astype(np.int32), name="painted")
    widget = finetune_panel(viewer, steps=3)
    read_in.clear()  # napari's own display of the layer
    job = widget.start()
    assert job is not None and not [t for t in read_in if t is threading.main_thread()]
    wait_job(job)
    assert read_in and threading.main_thread() not in read_in
    assert errors == [
        "Fine-tuning failed: the image 'holey' holds NaN or infinite values on this plane; "
        "replace them (e.g. by 0) before fine-tuning."
    ]
    assert "painted weight map" not in [layer.name for layer in viewer.layers]
    assert "failed" in widget.status.value and widget.start_button.isEnabled()
