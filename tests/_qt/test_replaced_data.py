"""An image's or labels' data replaced (``layer.data = other``) between or during the panels'
jobs: no result of the old data is shown as a result of the new."""

from __future__ import annotations

import numpy as np

from napari_unet._qt.finetune_widget import FineTuneWidget
from napari_unet._qt.inspect_widget import InspectWidget
from napari_unet._qt.segment_widget import SegmentWidget
from napari_unet.engine.augment import elastic_deform
from napari_unet.engine.synthetic import synthetic_nuclei

OLD = " (old data)"


def _names(viewer) -> list[str]:
    return [layer.name for layer in viewer.layers]


def _segment_panel(viewer):
    widget = SegmentWidget(viewer)
    widget.min_confidence.value = 0.0  # the tiny test model is unsure of every cell
    widget.show_probabilities.value = True
    return widget


def test_results_of_replaced_data_are_marked_old_until_the_next_run(
    viewer_with_image, wait_job, errors
):
    """Segment's labels and probabilities and the uncertainty of an image stayed shown as its
    results after its data were replaced by another image. Now they are hidden and named
    '(old data)'; *Correct this result* refuses the old result; the next Segment updates its
    layers in place and gives them back their names."""
    viewer = viewer_with_image
    image = viewer.layers["nuclei"]
    widget = _segment_panel(viewer)
    wait_job(widget.segment())
    wait_job(widget.corrections.show_uncertainty())
    made = [lyr for lyr in viewer.layers if lyr is not image]
    names = [lyr.name for lyr in made]
    assert names == [
        "nuclei labels",
        "nuclei probabilities",
        "nuclei uncertainty",
        "nuclei object confidence",
        "nuclei annotate here next",
    ]
    image.data = np.ascontiguousarray(image.data[::-1])  # another image of the same size
    assert [lyr.name for lyr in made] == [name + OLD for name in names]
    assert not any(lyr.visible for lyr in made)
    assert widget.corrections.correct() is None
    assert errors == [
        "Correction failed: the result 'nuclei labels (old data)' is of data since replaced; "
        "segment again."
    ]
    wait_job(widget.segment())
    labels, probabilities = made[:2]
    assert viewer.layers["nuclei labels"] is labels and labels.visible
    assert viewer.layers["nuclei probabilities"] is probabilities and probabilities.visible
    assert len(viewer.layers) == 6 and len(errors) == 1
    wait_job(widget.corrections.show_uncertainty())
    assert _names(viewer) == ["nuclei", *names]


def test_fine_tuning_stops_when_its_image_data_are_replaced(
    viewer_with_image, long_finetune, wait_job, qtbot, errors
):
    """The run went on learning the old data, and its closing check segmented the old plane
    into 'nuclei preview labels' over the new data. Now it stops and shows no preview."""
    viewer, widget = viewer_with_image, long_finetune
    job = widget.start()
    qtbot.waitUntil(lambda: widget.run.steps_done > 0, timeout=30_000)
    viewer.layers["nuclei"].data = np.zeros((64, 64), np.uint16)
    wait_job(job, timeout=10_000)
    assert job.cancelled and errors == []
    qtbot.waitUntil(lambda: not widget.preview.runner.busy, timeout=30_000)
    assert "nuclei preview labels" not in viewer.layers


def test_a_preview_of_replaced_data_is_not_shown(viewer_with_image, qtbot, errors):
    """A Fine-tune preview computed while the image's data were replaced landed over them."""
    viewer = viewer_with_image
    widget = FineTuneWidget(viewer)
    widget.device.value = "cpu"
    widget.refresh_preview()
    viewer.layers["nuclei"].data = np.zeros((64, 64), np.uint16)
    qtbot.waitUntil(lambda: not widget.preview.runner.busy, timeout=30_000)
    assert errors == [] and _names(viewer) == ["nuclei"]


def test_inspect_follows_replaced_labels_and_drops_errors_of_old_data(
    make_napari_viewer, qtbot, errors
):
    """After the labels' data were replaced, the deformation preview stayed the old labels'
    (only the weight map followed), and an error map computed meanwhile was shown for the new
    data. Now the deformation follows, and the errors are not shown."""
    labels = synthetic_nuclei((96, 96), n_cells=12, diameter=14.0, rng=5)[1]
    other = synthetic_nuclei((96, 96), n_cells=9, diameter=14.0, rng=6)[1]
    viewer = make_napari_viewer()
    cells = viewer.add_labels(labels, name="cells")
    viewer.add_labels(labels, name="truth")
    widget = InspectWidget(viewer)
    qtbot.addWidget(widget)
    widget.labels.value = cells
    widget.new_sample()
    qtbot.waitUntil(lambda: not widget.deform_runner.busy, timeout=30_000)
    cells.data = other
    qtbot.waitUntil(lambda: not widget.deform_runner.busy, timeout=30_000)
    qtbot.wait(50)
    qtbot.waitUntil(lambda: not widget.deform_runner.busy, timeout=30_000)
    deformed = viewer.layers["cells deformed"]
    (expected,) = elastic_deform([other], sigma=10.0, grid=3, orders=[0], rng=1)
    np.testing.assert_array_equal(deformed.data, expected)
    assert deformed.visible

    tools = widget.errors
    tools.prediction.value, tools.reference.value = cells, viewer.layers["truth"]
    job = tools.show_errors()
    cells.data = labels
    qtbot.waitUntil(lambda: job.done, timeout=30_000)
    assert errors == [] and "cells errors" not in viewer.layers
    assert tools.status.text() == "errors not shown: the data of 'cells' were replaced"
