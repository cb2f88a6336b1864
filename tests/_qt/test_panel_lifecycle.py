"""Panels closed, and images changed under them, while their jobs run: nothing lands late."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet._qt.inspect_widget import InspectWidget
from napari_unet._qt.segment_widget import SegmentWidget

#: the ways a panel goes: napari's close button (the panel leaves its dock), ``close()``, and
#: the Qt object deleted
CLOSINGS = ["dock close button", "close", "deleted"]


def _dock(viewer, widget):
    return viewer.window.add_dock_widget(widget)


def _close(qtbot, dock, widget, how: str) -> None:
    if how == "dock close button":
        dock.destroyOnClose()
    elif how == "close":
        widget.close()
    else:
        from qtpy.QtCore import QCoreApplication, QEvent

        with qtbot.waitSignal(widget.destroyed, timeout=1000):
            widget.deleteLater()
            QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)


def _names(viewer) -> list[str]:
    return [layer.name for layer in viewer.layers]


@pytest.mark.parametrize("how", CLOSINGS)
def test_closing_the_segment_panel_cancels_its_job(
    viewer_with_image, stack_image, wait_job, qtbot, errors, how
):
    """The Segment panel closed while it segments: the job went on and its labels (or, once
    cancelled, the planes done) were added to the viewer afterwards, and a deleted panel's
    status update failed with 'wrapped C/C++ object has been deleted'. Now closing cancels the
    job and nothing is added."""
    viewer = viewer_with_image
    viewer.add_image(np.concatenate([stack_image] * 4), name="long stack")
    widget = SegmentWidget(viewer)
    widget.image.value = viewer.layers["long stack"]
    dock = _dock(viewer, widget)
    job = widget.segment()
    qtbot.waitUntil(lambda: widget.progress.fraction > 0, timeout=30_000)
    _close(qtbot, dock, widget, how)
    wait_job(job, timeout=30_000)
    qtbot.wait(50)
    assert job.cancelled and errors == []
    assert _names(viewer) == ["nuclei", "long stack"]


@pytest.mark.parametrize("how", CLOSINGS)
def test_closing_the_segment_panel_stops_the_uncertainty(
    viewer_with_image, wait_job, qtbot, errors, how
):
    """Show uncertainty runs in the Segment panel: its layers came after the panel closed."""
    viewer = viewer_with_image
    widget = SegmentWidget(viewer)
    dock = _dock(viewer, widget)
    job = widget.corrections.show_uncertainty()
    _close(qtbot, dock, widget, how)
    wait_job(job)
    qtbot.wait(50)
    assert job.cancelled and errors == []
    assert _names(viewer) == ["nuclei"]


@pytest.fixture
def labelled_viewer(make_napari_viewer, nuclei_image):
    viewer = make_napari_viewer()
    image, labels = nuclei_image
    viewer.add_image(image, name="nuclei")
    viewer.add_labels(labels, name="cells")
    viewer.add_labels(np.where(labels % 3 == 0, 0, labels), name="seg")
    return viewer


@pytest.mark.parametrize("how", CLOSINGS)
def test_closing_the_inspect_panel_drops_its_previews(labelled_viewer, qtbot, errors, how):
    """The Inspect panel closed while a weight map, a deformation and an error map were
    computed: all three were added after it closed, and its weight map followed later edits
    of the labels."""
    viewer = labelled_viewer
    widget = InspectWidget(viewer)
    widget.labels.value = viewer.layers["cells"]
    tools = widget.errors
    tools.prediction.value, tools.reference.value = viewer.layers["seg"], viewer.layers["cells"]
    dock = _dock(viewer, widget)
    widget.update_weights()
    widget.new_sample()
    errors_job = tools.show_errors()
    runners = (widget.weights_runner, widget.deform_runner)
    _close(qtbot, dock, widget, how)
    cells = viewer.layers["cells"]
    cells.data = cells.data.copy()  # an edit after closing: no longer followed
    qtbot.wait(50)
    qtbot.waitUntil(lambda: errors_job.done and not any(r.busy for r in runners), timeout=30_000)
    qtbot.wait(50)
    assert errors == []
    assert _names(viewer) == ["nuclei", "cells", "seg"]


def test_deleting_the_fine_tune_panel_stops_the_run(
    viewer_with_image, long_finetune, wait_job, qtbot, errors
):
    """Closing the Fine-tune panel stopped its run, but deleting it did not: training went on
    unseen until its budget."""
    viewer, widget = viewer_with_image, long_finetune
    _dock(viewer, widget)
    job = widget.start()
    qtbot.waitUntil(lambda: widget.run.steps_done > 0, timeout=30_000)
    _close(qtbot, None, widget, "deleted")
    wait_job(job, timeout=10_000)
    assert job.cancelled and errors == []
    assert "nuclei preview labels" not in viewer.layers
