"""The Inspect widget in a real viewer: live weight maps, regions, deformation previews, errors."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet._qt.inspect_widget import InspectWidget
from napari_unet.engine.augment import elastic_deform
from napari_unet.engine.synthetic import synthetic_nuclei
from napari_unet.engine.weights import annotation_mask, weight_map

SCALE = (0.5, 0.5)
TRANSLATE = (3.0, 4.0)


@pytest.fixture
def cells():
    """A (96, 96) uint16 image of touching 14 px nuclei and its labels."""
    return synthetic_nuclei((96, 96), n_cells=12, diameter=14.0, rng=5)


@pytest.fixture
def viewer(make_napari_viewer, cells):
    viewer = make_napari_viewer()
    image, labels = cells
    viewer.add_image(image, name="nuclei", scale=SCALE, translate=TRANSLATE)
    viewer.add_labels(labels, name="cells", scale=SCALE, translate=TRANSLATE)
    return viewer


@pytest.fixture
def widget(viewer, qtbot):
    widget = InspectWidget(viewer)
    qtbot.addWidget(widget)
    return widget


def settle(qtbot, runner, after=None) -> None:
    """Wait until ``runner`` (a LatestOnly) has no job running or waiting; with ``after`` (a
    job), until a newer job has run."""
    qtbot.waitUntil(lambda: runner.job is not after and not runner.busy, timeout=30_000)


def test_defaults(widget, viewer):
    assert widget.labels.value is viewer.layers["cells"]
    assert widget.image.value is viewer.layers["nuclei"]
    assert widget.regions.value is None
    assert (widget.w0.value, widget.sigma.value, widget.strength.value) == (10.0, 5.0, 10.0)


def test_weight_map_layers_and_sliders(widget, viewer, cells, qtbot, errors):
    labels = cells[1]
    widget.update_weights()
    settle(qtbot, widget.weights_runner)
    assert errors == []

    total = viewer.layers["cells weight map"]
    w_c = viewer.layers["cells weight w_c"]
    border = viewer.layers["cells weight border term"]
    assert widget.weight_layers == [total, w_c, border]
    for layer in (total, w_c, border):
        assert layer.metadata["napari_unet"] == "inspect"
        np.testing.assert_allclose(layer.scale, SCALE)
        np.testing.assert_allclose(layer.translate, TRANSLATE)
    assert total.visible and not w_c.visible and not border.visible
    expected = weight_map(labels, w0=10.0, sigma=5.0)
    np.testing.assert_allclose(total.data, expected.total)
    np.testing.assert_allclose(w_c.data, expected.class_term)
    np.testing.assert_allclose(border.data, expected.border_term)
    assert border.data.max() > 1.0  # touching cells: a real border term
    n_layers = len(viewer.layers)

    widget.w0.value = 20.0  # updates at once, in place
    settle(qtbot, widget.weights_runner)
    assert viewer.layers["cells weight map"] is total and len(viewer.layers) == n_layers
    np.testing.assert_allclose(border.data, 2 * expected.border_term, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(total.data, weight_map(labels, w0=20.0, sigma=5.0).total)

    before = border.data.copy()
    widget.sigma.value = 9.0
    settle(qtbot, widget.weights_runner)
    assert not np.allclose(border.data, before)
    np.testing.assert_allclose(total.data, weight_map(labels, w0=20.0, sigma=9.0).total)
    assert "w0 = 20" in widget.status.value and "sigma = 9" in widget.status.value
    assert errors == []


def test_the_weight_map_is_shown_where_fine_tune_made_it_hidden(widget, viewer, cells, qtbot):
    """Fine-tune adds the weight map of its painted cells hidden; Inspect's *Show weight map*
    on the same labels updates that layer, and shows it."""
    from napari_unet._qt._annotations import show_weight_map

    hidden = show_weight_map(
        viewer, viewer.layers["cells"], weight_map(cells[1]), role="finetune", visible=False
    )
    assert not hidden[0].visible
    widget.update_weights()
    settle(qtbot, widget.weights_runner)
    assert widget.weight_layers[0] is hidden[0] and hidden[0].visible


def test_slider_drag_ends_with_the_last_value(widget, viewer, cells, qtbot):
    widget.update_weights()
    assert not widget.progress.bar.isHidden()  # a moving bar while the map is computed
    assert "weight map" in widget.progress.bar.format()
    settle(qtbot, widget.weights_runner)
    qtbot.waitUntil(lambda: widget.progress.bar.isHidden(), timeout=5_000)
    for value in np.arange(1.0, 15.5, 0.5):  # many changes while jobs are still running
        widget.w0.value = float(value)
    assert widget.weights_runner.busy and not widget.progress.bar.isHidden()
    settle(qtbot, widget.weights_runner)
    qtbot.waitUntil(lambda: widget.progress.bar.isHidden(), timeout=5_000)
    expected = weight_map(cells[1], w0=15.0, sigma=5.0)
    np.testing.assert_allclose(viewer.layers["cells weight map"].data, expected.total)


def test_regions_restrict_the_map(widget, viewer, cells, qtbot, errors):
    labels = cells[1]
    # a square in world coordinates over the first 32 x 32 pixels of the labels
    top_left = np.array(TRANSLATE)
    square = np.array([top_left, top_left + 16.0]) - 0.25
    shapes = viewer.add_shapes([square], shape_type="rectangle", name="annotated")
    widget.update_weights()
    settle(qtbot, widget.weights_runner)
    full = viewer.layers["cells weight map"].data.copy()
    assert np.all(full > 0)

    widget.regions.value = shapes  # the map follows the region choice
    settle(qtbot, widget.weights_runner)
    region = np.zeros(labels.shape, bool)
    region[:32, :32] = True
    expected = weight_map(labels, mask=annotation_mask(labels, region)).total
    total = viewer.layers["cells weight map"].data
    np.testing.assert_allclose(total, expected)
    assert np.all(total[:32, :32] > 0)
    outside = ~annotation_mask(labels, region)
    assert outside.any() and np.all(total[outside] == 0)

    # drawing another shape updates the map
    shown = widget.weights_runner.job
    shapes.add_rectangles(np.array([[30.0, 30.0], [40.0, 40.0]]) + top_left)
    settle(qtbot, widget.weights_runner, after=shown)
    assert (viewer.layers["cells weight map"].data > 0).sum() > (total > 0).sum()
    assert errors == []


def test_painting_updates_the_map(widget, viewer, qtbot):
    widget.update_weights()
    settle(qtbot, widget.weights_runner)
    before = viewer.layers["cells weight map"].data.copy()
    layer = viewer.layers["cells"]
    shown = widget.weights_runner.job
    layer.paint((48, 48), int(layer.data.max()) + 1, refresh=True)
    settle(qtbot, widget.weights_runner, after=shown)
    assert not np.array_equal(viewer.layers["cells weight map"].data, before)
    np.testing.assert_allclose(
        viewer.layers["cells weight map"].data, weight_map(np.array(layer.data)).total
    )


def test_deformation_preview_and_new_sample(widget, viewer, cells, qtbot, errors):
    image, labels = cells
    widget.new_sample()
    settle(qtbot, widget.deform_runner)
    assert errors == []
    warped_labels = viewer.layers["cells deformed"]
    warped_image = viewer.layers["nuclei deformed"]
    assert widget.deformed_labels is warped_labels and widget.deformed_image is warped_image
    for layer in (warped_labels, warped_image):
        assert layer.metadata["napari_unet"] == "inspect"
        assert layer.data.shape == labels.shape
        assert layer.translate[1] > TRANSLATE[1] + 96 * SCALE[1]  # beside the labels
        np.testing.assert_allclose(layer.scale, SCALE)
    assert warped_labels.data.dtype == labels.dtype and warped_image.data.dtype == image.dtype
    assert set(np.unique(warped_labels.data)) <= set(np.unique(labels))
    assert not np.array_equal(warped_labels.data, labels)
    expected_image, expected_labels = elastic_deform(
        [image.astype(np.float32), labels], sigma=10.0, grid=3, orders=[3, 0], rng=1
    )
    np.testing.assert_array_equal(warped_labels.data, expected_labels)
    np.testing.assert_allclose(warped_image.data, np.clip(expected_image, 0, None), atol=0.51)
    assert warped_image.contrast_limits == viewer.layers["nuclei"].contrast_limits

    first = warped_labels.data.copy()
    n_layers = len(viewer.layers)
    widget.sample_button.click()
    settle(qtbot, widget.deform_runner)
    assert widget.seed == 2 and len(viewer.layers) == n_layers
    assert viewer.layers["cells deformed"] is warped_labels
    assert not np.array_equal(warped_labels.data, first)


def test_the_deformed_image_takes_the_name_of_the_image_it_shows(widget, viewer, qtbot, errors):
    """The deformed image layer is one per labels layer: made again from another image, it
    kept the first image's name."""
    widget.new_sample()
    settle(qtbot, widget.deform_runner)
    warped = viewer.layers["nuclei deformed"]
    other = viewer.add_image(
        np.asarray(viewer.layers["nuclei"].data) * 2, name="brighter", scale=SCALE,
        translate=TRANSLATE,
    )  # fmt: skip
    widget.image.value = other
    widget.new_sample()
    settle(qtbot, widget.deform_runner)
    assert errors == []
    assert widget.deformed_image is warped and warped.name == "brighter deformed"
    assert "nuclei deformed" not in viewer.layers


def test_strength_zero_is_identity(widget, viewer, cells, qtbot):
    image, labels = cells
    widget.new_sample()
    settle(qtbot, widget.deform_runner)
    widget.strength.value = 0.0  # the preview follows the slider
    settle(qtbot, widget.deform_runner)
    np.testing.assert_array_equal(viewer.layers["cells deformed"].data, labels)
    np.testing.assert_array_equal(viewer.layers["nuclei deformed"].data, image)


def test_labels_only_preview_and_image_removed(widget, viewer, qtbot):
    widget.new_sample()
    settle(qtbot, widget.deform_runner)
    assert "nuclei deformed" in viewer.layers
    widget.image.value = None
    settle(qtbot, widget.deform_runner)
    assert "nuclei deformed" not in viewer.layers and "cells deformed" in viewer.layers


def test_missing_labels_layer_is_reported(make_napari_viewer, qtbot, cells, errors):
    viewer = make_napari_viewer()
    viewer.add_image(cells[0], name="nuclei")
    widget = InspectWidget(viewer)
    qtbot.addWidget(widget)
    widget.show_button.click()
    widget.sample_button.click()
    assert len(errors) == 2
    assert all("add or choose a Labels layer" in message for message in errors)
    assert [layer.name for layer in viewer.layers] == ["nuclei"]


def test_mismatched_image_is_reported(widget, viewer, qtbot, errors):
    viewer.add_image(np.zeros((40, 50), np.float32), name="small")
    widget.image.value = viewer.layers["small"]
    widget.new_sample()
    assert len(errors) == 1 and "does not match the labels" in errors[0]
    assert "cells deformed" not in viewer.layers


def test_image_follows_the_labels_choice(widget, viewer, cells, qtbot, errors):
    widget.new_sample()
    settle(qtbot, widget.deform_runner)
    small = viewer.add_labels(np.zeros((40, 50), np.int32), name="small labels")
    widget.labels.value = small  # no image of that size: the preview goes on without one
    settle(qtbot, widget.deform_runner)
    assert widget.image.value is None and errors == []
    assert viewer.layers["small labels deformed"].data.shape == (40, 50)
    widget.labels.value = viewer.layers["cells"]
    assert widget.image.value is viewer.layers["nuclei"]


def test_user_layers_are_never_modified(widget, viewer, cells, qtbot):
    shapes = viewer.add_shapes(
        [np.array([[3.0, 4.0], [20.0, 20.0]])], shape_type="rectangle", name="regions"
    )
    before = {layer.name: np.array(layer.data, copy=True) for layer in viewer.layers[:2]}
    shapes_before = [np.array(s) for s in shapes.data]
    widget.regions.value = shapes
    widget.update_weights()
    widget.new_sample()
    widget.w0.value = 3.0
    widget.strength.value = 25.0
    settle(qtbot, widget.weights_runner)
    settle(qtbot, widget.deform_runner)
    for name, data in before.items():
        np.testing.assert_array_equal(viewer.layers[name].data, data)
    assert all(np.array_equal(a, b) for a, b in zip(shapes.data, shapes_before, strict=True))
    ours = [layer for layer in viewer.layers if "napari_unet" in layer.metadata]
    assert {layer.metadata["napari_unet"] for layer in ours} == {"inspect"}
    assert len(ours) == 5  # three weight layers, deformed labels and image
    assert all(layer not in ours for layer in (*viewer.layers[:2], shapes))


def test_stack_uses_the_current_plane(make_napari_viewer, qtbot, cells, errors):
    labels = cells[1]
    stack = np.stack([labels, np.roll(labels, 20, axis=1), np.roll(labels, 40, axis=0)])
    viewer = make_napari_viewer()
    layer = viewer.add_labels(stack, name="stack")
    # a 2D region over a stack counts on every plane
    viewer.add_shapes([np.array([[0.0, 0.0], [40.0, 40.0]])], shape_type="rectangle", name="r")
    widget = InspectWidget(viewer)
    qtbot.addWidget(widget)
    widget.regions.value = viewer.layers["r"]
    viewer.dims.set_current_step(0, 2)
    widget.update_weights()
    settle(qtbot, widget.weights_runner)
    total = viewer.layers["stack weight map"]
    region = np.zeros(labels.shape, bool)
    region[:41, :41] = True
    expected = weight_map(stack[2], mask=annotation_mask(stack[2], region)).total
    np.testing.assert_allclose(total.data, expected)

    viewer.dims.set_current_step(0, 1)  # the map follows the plane shown
    settle(qtbot, widget.weights_runner)
    expected = weight_map(stack[1], mask=annotation_mask(stack[1], region)).total
    np.testing.assert_allclose(total.data, expected)

    viewer.layers.remove(layer)  # live updates without labels stay silent
    widget.w0.value = 4.0
    assert errors == []


def test_removing_the_labels_removes_their_weight_map_and_deformation(
    widget, viewer, qtbot, errors
):
    """The weight map and the deformation of labels the user removed stayed behind (the
    picker moved on), orphans showing labels no longer in the viewer. Now they go with the
    labels; the image and the other labels' layers stay."""
    other = viewer.add_labels(np.zeros((96, 96), np.int32), name="other", scale=SCALE)
    widget.labels.value = viewer.layers["cells"]
    widget.update_weights()
    widget.new_sample()
    settle(qtbot, widget.weights_runner)
    settle(qtbot, widget.deform_runner)
    names = ["cells weight map", "cells weight w_c", "cells weight border term"]
    names += ["cells deformed", "nuclei deformed"]
    shown = [viewer.layers[name] for name in names]
    viewer.layers.remove("cells")
    settle(qtbot, widget.weights_runner)
    settle(qtbot, widget.deform_runner)
    assert not [layer.name for layer in shown if layer in viewer.layers]
    # the panel moved on to the other labels, whose own layers it shows
    assert widget.labels.value is other and "other weight map" in viewer.layers
    assert "nuclei" in viewer.layers and errors == []


def test_weight_map_layers_are_shared_with_fine_tune(widget, viewer, cells, qtbot, errors):
    """Fine-tune and Inspect show the weight map of the same labels in one set of layers."""
    from napari_unet._qt._annotations import show_weight_map

    shown = show_weight_map(viewer, viewer.layers["cells"], weight_map(cells[1]), role="finetune")
    n_layers = len(viewer.layers)
    widget.update_weights()
    settle(qtbot, widget.weights_runner)
    assert errors == [] and len(viewer.layers) == n_layers
    assert widget.weight_layers == shown
    assert not any(layer.name.endswith("]") for layer in viewer.layers)


def test_labels_with_planes_last_are_read_and_shown_on_the_plane(
    widget, viewer, cells, qtbot, errors
):
    """(Y, X, Z) labels: axes YXZ are detected; the weight map and the deformation are of the
    plane at the Z slider and lie on that plane, in the labels' own axes."""
    from napari_unet._qt._inspect_jobs import compute_deformation

    labels = cells[1]
    stack = np.zeros((*labels.shape, 3), labels.dtype)
    stack[:, :, 2] = labels
    layer = viewer.add_labels(stack, name="yxz")
    widget.labels.value = layer
    assert widget.axes.value == "YXZ" and not widget.axes.native.isHidden()
    assert all("C" not in choice for choice in widget.axes.choices)
    viewer.dims.order = (2, 0, 1)
    viewer.dims.set_point(2, 2.0)

    widget.update_weights()
    settle(qtbot, widget.weights_runner)
    total = viewer.layers["yxz weight map"]
    assert total.data.shape == (96, 96, 1)
    np.testing.assert_allclose(total.translate, (0.0, 0.0, 2.0))
    np.testing.assert_allclose(total.data[:, :, 0], weight_map(labels, w0=10.0, sigma=5.0).total)

    widget.update_deformation()
    settle(qtbot, widget.deform_runner)
    deformed = viewer.layers["yxz deformed"]
    assert deformed.data.shape == (96, 96, 1)
    np.testing.assert_allclose(deformed.translate, (0.0, 96.0 + 16.0, 2.0))
    expected = compute_deformation(None, labels, sigma=10.0, seed=0)[1]
    np.testing.assert_array_equal(deformed.data[:, :, 0], expected)

    widget.axes.value = "ZYX"  # the user's choice is followed: planes on the first axis
    settle(qtbot, widget.weights_runner)
    assert viewer.layers["yxz weight map"].data.shape == (96, 3)  # a (X, Z) plane, 2D
    assert errors == []


def test_a_deformation_lies_beside_rotated_labels(widget, viewer, qtbot, errors):
    """Labels placed with a rotation: the deformed sample lies just right of them along their
    own (rotated) rows, with the same rotation, not off at an angle."""
    labels = viewer.layers["cells"]
    labels.rotate = 40
    widget.image.value = None
    widget.new_sample()
    settle(qtbot, widget.deform_runner)
    assert errors == []
    deformed = viewer.layers["cells deformed"]
    np.testing.assert_allclose(deformed.rotate, labels.rotate)
    shift = 96 + 16  # the labels' width and the gap, in pixels
    for point in [(0, 0), (50, 20), (95, 95)]:
        np.testing.assert_allclose(
            deformed.data_to_world(point), labels.data_to_world((point[0], point[1] + shift))
        )


def test_renaming_the_labels_keeps_one_set_of_weight_maps(widget, viewer, qtbot, errors):
    """The weight-map layers were keyed by the labels layer's name: after a rename the next map
    came as a second set beside the first, and the two total maps, blended additively, showed
    their sum. Now they follow the layer (napari's unique_id): one set, updated in place."""
    widget.update_weights()
    settle(qtbot, widget.weights_runner)
    total = viewer.layers["cells weight map"]
    n_layers = len(viewer.layers)
    viewer.layers["cells"].name = "nuclei outlines"
    previous = widget.weights_runner.job
    widget.update_weights()
    settle(qtbot, widget.weights_runner, after=previous)
    assert len(viewer.layers) == n_layers and total in viewer.layers
    assert widget.weight_layers[0] is total and errors == []


def test_renaming_the_labels_keeps_one_deformed_image(widget, viewer, qtbot, errors):
    """The deformed image was keyed by the labels layer's name (the deformed labels by its
    unique_id): after a rename, *New sample* added a second 'nuclei deformed' beside the
    first, which stayed behind with the old sample. Now it is updated in place."""
    widget.new_sample()
    settle(qtbot, widget.deform_runner)
    image = viewer.layers["nuclei deformed"]
    n_layers = len(viewer.layers)
    viewer.layers["cells"].name = "nuclei outlines"
    previous = widget.deform_runner.job
    widget.new_sample()
    settle(qtbot, widget.deform_runner, after=previous)
    assert len(viewer.layers) == n_layers and widget.deformed_image is image
    assert errors == []


def test_renaming_the_labels_renames_the_layers_named_after_them(widget, viewer, qtbot, errors):
    """The weight maps and the deformed labels are found by the labels' unique_id, but were
    left with the old name after a rename ('cells weight map' beside 'nuclei outlines'), and
    a rerun kept it. Now their names follow the labels'; a layer named after another layer
    (the deformed image, after the image) or renamed by the user keeps its name."""
    widget.update_weights()
    widget.new_sample()
    settle(qtbot, widget.weights_runner)
    settle(qtbot, widget.deform_runner)
    total, w_c = viewer.layers["cells weight map"], viewer.layers["cells weight w_c"]
    deformed, image = viewer.layers["cells deformed"], viewer.layers["nuclei deformed"]
    viewer.layers["cells weight border term"].name = "my border"
    viewer.layers["cells"].name = "nuclei outlines"
    assert (total.name, w_c.name) == ("nuclei outlines weight map", "nuclei outlines weight w_c")
    assert deformed.name == "nuclei outlines deformed" and image.name == "nuclei deformed"
    assert "my border" in viewer.layers
    previous = widget.weights_runner.job
    widget.update_weights()  # a rerun keeps the names
    settle(qtbot, widget.weights_runner, after=previous)
    assert widget.weight_layers[0] is total and total.name == "nuclei outlines weight map"
    labels = viewer.layers["nuclei outlines"]
    labels.data = np.ascontiguousarray(labels.data[::-1])  # marked old, then renamed
    labels.name = "outlines"
    assert total.name == "outlines weight map (old data)"
    previous = widget.weights_runner.job
    widget.update_weights()  # made again from the new data: the name given back is the new one
    settle(qtbot, widget.weights_runner, after=previous)
    assert total.name == "outlines weight map" and errors == []
