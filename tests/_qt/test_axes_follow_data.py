"""The axes offered follow the chosen layer's data when they are replaced by another shape."""

from __future__ import annotations

import numpy as np

from napari_unet._qt.finetune_widget import FineTuneWidget
from napari_unet._qt.inspect_widget import InspectWidget
from napari_unet._qt.segment_widget import SegmentWidget


def test_segment_axes_follow_replaced_data(make_napari_viewer):
    """The axes were detected when the layer was chosen only: a (5, 128, 128) stack whose data
    became a (128, 128, 3) image was still read as ZYX (128 planes of 128 x 3 pixels), and a
    2D layer that became a stack offered no choice. Now the choices and the detected order
    follow the data; an order the user chose is kept while it fits."""
    viewer = make_napari_viewer()
    layer = viewer.add_image(np.zeros((5, 128, 128), np.uint16), name="img")
    widget = SegmentWidget(viewer)
    assert widget.axes.value == "ZYX" and not widget.axes.native.isHidden()
    layer.data = np.zeros((128, 128, 3), np.uint16)
    assert widget.axes.value == "YXC" and widget.layout_for(layer).axes == "YXC"
    layer.data = np.zeros((128, 128), np.uint16)
    assert widget.axes.value == "YX" and widget.axes.native.isHidden()
    layer.data = np.zeros((7, 128, 128), np.uint16)
    assert widget.axes.value == "ZYX" and not widget.axes.native.isHidden()
    widget.axes.value = "TYX"  # the user's choice
    layer.data = np.zeros((9, 64, 64), np.uint16)
    assert widget.axes.value == "TYX" and "ZYX" in widget.axes.choices
    layer.data = np.zeros((2, 9, 64, 64), np.uint16)  # TYX no longer fits
    assert widget.axes.value == widget.axes.choices[0] and len(widget.axes.value) == 4


def test_fine_tune_and_inspect_axes_follow_replaced_data(make_napari_viewer):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((5, 64, 64), np.uint16), name="img")
    labels = viewer.add_labels(np.zeros((5, 64, 64), np.int32), name="cells")
    finetune, inspect = FineTuneWidget(viewer), InspectWidget(viewer)
    inspect.errors.prediction.value = labels
    image.data = np.zeros((64, 64, 3), np.uint16)
    assert finetune.axes.value == "YXC"
    labels.data = np.zeros((64, 64, 2), np.int32)
    assert inspect.axes.value == "YXZ" and inspect.errors.axes.value == "YXZ"


def test_two_small_axes_are_offered_as_a_one_channel_model_reads_them(make_napari_viewer):
    """A (2, 3, Y, X) layer was offered ZCYX first, which the bundled one-channel model then
    refused at the click; it is read as TZYX (as the command line reads it), the other readings
    stay in the choice, and the tooltip says the axes are a guess."""
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 3, 64, 64), np.uint16), name="img")
    widget = SegmentWidget(viewer)
    assert widget.axes.value == "TZYX"
    assert "ZCYX" in widget.axes.choices
    assert "a guess" in widget.axes.tooltip and "ZCYX" in widget.axes.tooltip
    viewer.layers["img"].data = np.zeros((20, 64, 64), np.uint16)
    assert widget.axes.value == "ZYX" and "a guess" not in widget.axes.tooltip
