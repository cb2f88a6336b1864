"""The correction loop in a real viewer: segment -> correct -> fine-tune -> segment again, the
split tool, the uncertainty layers, and the error layers of the Inspect panel."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet._qt._correction_layers import original_of
from napari_unet._qt._session import session_for
from napari_unet._qt._split_lines import apply_split_lines
from napari_unet._qt.finetune_widget import FineTuneWidget
from napari_unet._qt.inspect_widget import InspectWidget
from napari_unet._qt.segment_widget import SegmentWidget

GEOMETRY = {"scale": (0.5, 0.5), "translate": (3.0, 4.0)}  # as the image of viewer_with_image
#: the known error: a bright hollow square (not a nucleus) in an empty corner of the image
SQUARE = (10, 100, 14)


def _with_square(image, truth):
    img = image.astype(np.float32)
    r, c, n = SQUARE
    assert not truth[r - 2 : r + n + 2, c - 2 : c + n + 2].any()
    img[r : r + n, c : c + n] = np.median(img[truth > 0])
    img[r + 3 : r + n - 3, c + 3 : c + n - 3] = np.median(img[truth == 0])
    return img


def _error_tools(viewer, pred, gt):
    """Layers "seg" (``pred``) and "truth" (``gt``), an Inspect panel with its error section set
    to compare them: (panel, its ErrorTools). Keep the panel: its widgets die with it."""
    viewer.add_labels(gt, name="truth")
    viewer.add_labels(pred, name="seg")
    panel = InspectWidget(viewer)
    tools = panel.errors
    tools.prediction.value = viewer.layers["seg"]
    tools.reference.value = viewer.layers["truth"]
    return panel, tools


def _square_pixels(labels):
    r, c, n = SQUARE
    return int((np.asarray(labels)[r : r + n, c : c + n] > 0).sum())


def test_correct_then_finetune_removes_the_known_false_object(
    viewer_with_image, nuclei_image, wait_job, errors
):
    """The tiny model finds the square as a cell. The user deletes it in the corrections copy
    and marks the corrected area (the quarter around it); Fine-tune learns that area only
    (asserted on its training targets) and, after 80
    steps, Segment no longer finds the square while the nuclei stay (measured here: 88 -> 0 px
    of the square, nuclei area 1310 -> 2162 px)."""
    viewer = viewer_with_image
    viewer.layers["nuclei"].data = _with_square(*nuclei_image)
    segment = SegmentWidget(viewer)
    segment.min_confidence.value = 0.0  # the tiny test model is unsure of every cell
    segment.device.value = "cpu"
    wait_job(segment.segment())
    result = segment.labels_layer
    before = np.array(result.data)
    assert _square_pixels(before) > 50  # the known error is there

    corrections = segment.corrections.correct()
    assert corrections.name == f"{result.name} corrections"
    np.testing.assert_array_equal(original_of(corrections), before)
    r, c, n = SQUARE
    false_id = int(np.bincount(before[r : r + n, c : c + n].ravel())[1:].argmax()) + 1
    data = np.array(corrections.data)
    data[data == false_id] = 0  # the user deletes the false object
    corrections.data = data
    np.testing.assert_array_equal(result.data, before)  # the Segment result is untouched

    finetune = FineTuneWidget(viewer)
    finetune.labels.value = corrections
    # the user marks the corrected area: the top right quarter, the square and the cells there
    area = viewer.add_shapes(
        [np.array([[0.0, 64.0], [64.0, 128.0]])], shape_type="rectangle", name="checked",
        **GEOMETRY,
    )
    finetune.regions.value = area
    finetune.steps.value = 80
    finetune.lr.value = 1e-2
    finetune.tile_size.value = 48
    finetune.augment.value = 0.3
    finetune.device.value = "cpu"
    finetune.preview_every.value = 0
    finetune.minutes.value = 10  # the 80 steps, also on a loaded machine
    request = finetune.training_request()
    # the training targets: the deleted square is background inside the region, objects far
    # from the edit are not labels and lie outside the region (ignored)
    deleted = before == false_id
    assert request.regions is not None and request.regions[deleted].all()
    assert not request.labels[deleted].any()
    kept = set(np.unique(before[:64, 64:])) - {0, false_id}
    assert kept and kept <= set(np.unique(request.labels))  # the cells there are labels
    assert not request.regions[96:, :32].any()  # far from the area: ignored

    wait_job(finetune.start(), timeout=120_000)
    assert finetune.run.steps_done == 80
    finetune.use_button.click()
    assert session_for(viewer).current.kind == "fine-tuned"
    wait_job(segment.segment())
    after = np.asarray(segment.labels_layer.data)
    print(f"\nsquare: {_square_pixels(before)} -> {_square_pixels(after)} px; nuclei area "
          f"{(before > 0).sum() - _square_pixels(before)} -> {(after > 0).sum()} px")
    assert _square_pixels(after) < 0.2 * _square_pixels(before)
    truth = nuclei_image[1]
    assert ((after > 0) & (truth > 0)).sum() > 0.8 * ((before > 0) & (truth > 0)).sum()
    assert errors == []


def test_deleting_an_isolated_object_alone_is_refused_with_a_reason(viewer_with_image, errors):
    """Without a drawn area, the corrected area is inferred from the edits: deleting one object
    far from every other leaves no cell in it to learn from, and Fine-tune says so; with a kept
    cell within reach of the edit, the same request is taken. Hand-made labels, so that it does
    not depend on what a model finds."""
    from napari_unet._qt._correction_layers import start_correction

    viewer = viewer_with_image
    labels = np.zeros((128, 128), np.int32)
    labels[8:24, 8:24] = 1  # the false object the user deletes
    labels[100:116, 100:116] = 2  # a cell far from it
    result = viewer.add_labels(labels, name="nuclei labels", **GEOMETRY)
    corrections, _lines = start_correction(viewer, result)
    finetune = FineTuneWidget(viewer)
    finetune.labels.value = corrections
    finetune.regions.value = None
    data = np.array(corrections.data)
    data[data == 1] = 0
    corrections.data = data
    with pytest.raises(ValueError, match="holds no cell"):
        finetune.training_request()
    data[26:42, 8:24] = 3  # a missed cell painted next to the deleted object
    corrections.data = data
    request = finetune.training_request()
    assert request.labels[26:42, 8:24].all() and not request.labels[8:24, 8:24].any()
    assert not request.labels[100:116, 100:116].any()  # far from every edit: not taught
    assert errors == []


def test_a_drawn_line_splits_an_object_of_the_corrections(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    labels = np.zeros((40, 60), np.int32)
    labels[10:30, 5:55] = 3  # two cells merged into one
    result = viewer.add_labels(labels, name="cells labels", **GEOMETRY)
    from napari_unet._qt._correction_layers import start_correction

    corrections, lines = start_correction(viewer, result)
    # a vertical line at column 30 in data coordinates, given to the layer in world coordinates
    world = [result.data_to_world(p) for p in ([0.0, 30.0], [39.0, 30.0])]
    lines.add_paths(np.array([lines.world_to_data(w) for w in world]))
    out = np.asarray(corrections.data)
    assert set(np.unique(out)) == {0, 3, 4}  # cut when the line was drawn
    assert len(lines.data) == 0  # the line is used up
    assert (out > 0).sum() == (labels > 0).sum()
    np.testing.assert_array_equal(result.data, labels)  # the result itself is untouched
    assert errors == []
    lines.add_paths(np.array([[1.0, 1.0], [2.0, 2.0]]))  # crosses nothing: a message, no change
    assert errors and "crosses no object" in errors[-1]
    assert apply_split_lines(lines) == 0


def test_uncertainty_layers_and_ranked_boxes(viewer_with_image, wait_job, errors):
    viewer = viewer_with_image
    segment = SegmentWidget(viewer)
    segment.min_confidence.value = 0.0  # the tiny test model is unsure of every cell
    segment.device.value = "cpu"
    tools = segment.corrections
    wait_job(tools.show_uncertainty())
    assert errors == []
    u = tools.uncertainty_layer
    assert u.name == "nuclei uncertainty" and u.data.shape == (128, 128)
    assert 0.0 <= float(u.data.min()) and float(u.data.max()) <= 1.0 and u.data.max() > 0
    boxes = tools.boxes_layer
    assert boxes.name == "nuclei annotate here next" and 1 <= len(boxes.data) <= 5
    assert list(boxes.features["rank"]) == list(range(1, len(boxes.data) + 1))
    np.testing.assert_allclose(boxes.scale, u.scale)
    assert "least confident objects" in tools.status.text()
    wait_job(tools.show_uncertainty())  # a rerun replaces the layers, it does not pile them up
    assert sum(lyr.name.startswith("nuclei annotate here next") for lyr in viewer.layers) == 1


def test_uncertainty_of_an_image_with_planes_last_lies_on_the_plane_shown(
    make_napari_viewer, nuclei_image, tiny_entry, wait_job, errors
):
    viewer = make_napari_viewer()
    image = nuclei_image[0]
    stack = np.stack([image, image[::-1]], axis=-1)  # (Y, X, Z): planes on the last axis
    layer = viewer.add_image(stack, name="yxz", scale=(0.5, 0.5, 2.0), translate=(3.0, 4.0, 1.0))
    session_for(viewer).set_current(tiny_entry)
    segment = SegmentWidget(viewer)
    segment.min_confidence.value = 0.0
    segment.device.value = "cpu"
    assert segment.axes.value == "YXZ"
    viewer.dims.set_point(2, layer.data_to_world([0, 0, 1])[2])  # show plane Z = 1
    tools = segment.corrections
    wait_job(tools.show_uncertainty())
    assert errors == []
    u = tools.uncertainty_layer
    assert u.data.shape == (128, 128, 1)  # the plane's uncertainty, in the image's own axes
    np.testing.assert_allclose(u.scale, (0.5, 0.5, 2.0))
    np.testing.assert_allclose(u.translate, (3.0, 4.0, 1.0 + 1 * 2.0))  # on plane Z = 1
    boxes = tools.boxes_layer
    assert boxes.ndim == 3 and len(boxes.data) >= 1
    assert all((np.asarray(box)[:, 2] == 1).all() for box in boxes.data)  # corners on Z = 1
    rows = np.concatenate([np.asarray(box)[:, 0] for box in boxes.data])
    assert rows.min() >= 0 and rows.max() <= 128  # Y holds rows, not planes
    assert "plane (1,)" in tools.status.text()


def test_errors_of_labels_with_planes_last_are_scored_plane_by_plane(
    make_napari_viewer, wait_job, errors
):
    viewer = make_napari_viewer()
    gt = np.zeros((20, 60, 2), np.int32)
    pred = np.zeros_like(gt)
    gt[2:8, 2:8, 0], pred[2:8, 2:8, 0] = 1, 11  # plane 0: one correct cell
    gt[2:8, 30:42, 0], pred[2:8, 30:36, 0], pred[2:8, 36:42, 0] = 4, 13, 14  # and a split
    gt[10:16, 10:16, 1] = 2  # plane 1: a miss
    _panel, tools = _error_tools(viewer, pred, gt)  # the panel kept alive for the job
    assert tools.axes.value == "YXZ"
    wait_job(tools.show_errors())
    assert errors == []
    codes = np.asarray(viewer.layers["seg errors"].data)
    assert codes.shape == gt.shape
    assert codes[4, 4, 0] == 1 and codes[4, 33, 0] == 5 and codes[12, 12, 1] == 3
    text = tools.status.text()
    assert "1 miss," in text and "1 split (in 2 pieces)" in text and "1 correct" in text


def test_inspect_colours_merges_splits_misses_and_false_objects(make_napari_viewer, wait_job, errors):
    viewer = make_napari_viewer()
    gt = np.zeros((20, 60), np.int32)
    pred = np.zeros_like(gt)
    gt[2:8, 2:8], pred[2:8, 2:8] = 1, 11
    gt[2:8, 12:18], gt[2:8, 18:24], pred[2:8, 12:24] = 2, 3, 12  # merge
    gt[2:8, 30:42], pred[2:8, 30:36], pred[2:8, 36:42] = 4, 13, 14  # split
    gt[12:18, 2:8] = 5  # miss
    pred[12:18, 40:46] = 15  # false positive
    _panel, tools = _error_tools(viewer, pred, gt)  # the panel kept alive for the job
    wait_job(tools.show_errors())
    layer = viewer.layers["seg errors"]
    assert layer is tools.errors_layer
    codes = np.asarray(layer.data)
    assert codes[4, 4] == 1 and codes[4, 15] == 4 and codes[4, 33] == 5
    assert codes[14, 4] == 3 and codes[14, 42] == 2
    text = tools.status.text()
    assert "1 false positive," in text and "1 miss," in text and "1 merge (of 2 cells)" in text
    assert "1 split (in 2 pieces)" in text and "AP@0.5 0.429" in text
    tools.reference.value = viewer.layers["seg"]
    assert tools.show_errors() is None and errors  # the same layer twice: a message


def test_a_failed_comparison_does_not_leave_the_status_comparing(make_napari_viewer, wait_job, errors):
    """Labels and reference of different shapes: the notification says so, and the status line
    says the comparison failed (it used to read 'comparing … with …' for ever)."""
    viewer = make_napari_viewer()
    reference = viewer.add_labels(np.ones((64, 80), np.int32), name="reference")
    _panel, tools = _error_tools(viewer, np.ones((96, 96), np.int32), np.ones((96, 96), np.int32))
    tools.reference.value = reference
    job = tools.show_errors()
    wait_job(job)
    assert job.error is not None and "differ in shape" in errors[-1]
    assert tools.status.text() == "failed (see the notification)"


def test_a_second_show_errors_while_one_runs_is_refused(make_napari_viewer, wait_job, errors):
    """Two clicks on *Show errors* ran two comparisons, and whichever ended last was shown
    (with the reference chosen in between, the other one's). Now, as Segment and Fine-tune,
    the button is off while one runs and a second call returns that job."""
    viewer = make_napari_viewer()
    gt = np.zeros((20, 60), np.int32)
    gt[2:8, 2:8], gt[10:16, 30:42] = 1, 2
    _panel, tools = _error_tools(viewer, gt.copy(), gt)  # the panel kept alive for the job
    job = tools.show_errors()
    assert job is not None and not tools.button.isEnabled()
    tools.reference.value = viewer.add_labels(np.zeros_like(gt), name="empty")
    assert tools.show_errors() is job  # the running comparison, not a second one
    wait_job(job)
    assert errors == [] and tools.button.isEnabled()
    assert tools.status.text().startswith("AP@0.5 1.000: 2 correct")  # seg against truth
    second = tools.show_errors()  # over: a new comparison, with the reference chosen now
    assert second is not job
    wait_job(second)
    assert "2 false positives" in tools.status.text() and tools.button.isEnabled()


def test_errors_of_a_multiscale_labels_layer_use_its_full_resolution(
    make_napari_viewer, wait_job, errors
):
    """A multiscale Labels layer (a pyramid) was compared by its smallest level: 'the labels
    (10, 30) and the reference (20, 60) differ in shape' for layers of the same size. Its full
    resolution is compared now, and the errors lie over it."""
    viewer = make_napari_viewer()
    gt = np.zeros((20, 60), np.int32)
    gt[2:8, 2:8], gt[10:16, 30:42] = 1, 2
    pred = np.where(gt > 0, gt + 10, 0).astype(np.int32)
    _panel, tools = _error_tools(viewer, pred, gt)  # the panel kept alive for the job
    viewer.layers.remove("seg")
    pyramid = viewer.add_labels([pred, pred[::2, ::2]], name="seg", multiscale=True)
    tools.prediction.value = pyramid
    job = tools.show_errors()
    wait_job(job)
    assert job.error is None and errors == []
    codes = np.asarray(viewer.layers["seg errors"].data)
    assert codes.shape == gt.shape and codes[4, 4] == 1 and codes[12, 35] == 1
    assert tools.status.text().startswith("AP@0.5 1.000: 2 correct")
