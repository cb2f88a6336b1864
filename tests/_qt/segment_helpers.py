"""Helpers of the Segment panel's tests (tests/_qt/test_segment_*.py): a panel set up for the
tiny test model, and a long stack being segmented. Fixtures live in conftest.py."""

from __future__ import annotations

import numpy as np

from napari_unet._qt.segment_widget import SegmentWidget


def segment_panel(viewer, qtbot=None):
    """A Segment widget that keeps every object the tiny test model draws."""
    widget = SegmentWidget(viewer)
    # the tiny test model is unsure of every cell (60 steps): keep all it draws
    widget.min_confidence.value = 0.0
    if qtbot is not None:
        qtbot.addWidget(widget)
    return widget


def segmenting_a_long_stack(viewer, stack_image, qtbot):
    """A long stack (the stack image four times) whose Segment job has started: (layer, widget,
    job)."""
    layer = viewer.add_image(np.concatenate([stack_image] * 4), name="long stack")
    widget = segment_panel(viewer, qtbot)
    widget.image.value = layer
    job = widget.segment()
    qtbot.waitUntil(lambda: widget.progress.fraction > 0, timeout=30_000)
    return layer, widget, job
