"""Helpers of the Fine-tune panel's tests (tests/_qt/test_finetune_*.py): a panel set up for fast
CPU runs on the 128 x 128 test image, painted cells placed like that image, and the engine's
generators run to their end. Fixtures live in conftest.py."""

from __future__ import annotations

import numpy as np

from napari_unet._qt.finetune_widget import FineTuneWidget

GEOMETRY = {"scale": (0.5, 0.5), "translate": (3.0, 4.0)}  # as the image of viewer_with_image


def finetune_panel(viewer, *, steps, preview_every=0, **settings):
    """A Fine-tune widget set up for fast CPU runs on the 128 x 128 test image."""
    widget = FineTuneWidget(viewer)
    widget.steps.value = steps
    widget.tile_size.value = 48
    widget.augment.value = 0.3
    widget.device.value = "cpu"
    widget.preview_every.value = preview_every
    for name, value in settings.items():
        getattr(widget, name).value = value
    return widget


def drain(generator):
    """Run an engine generator to its end and return what it returns."""
    while True:
        try:
            next(generator)
        except StopIteration as stop:
            return stop.value


def paint(viewer, data, name="painted"):
    return viewer.add_labels(np.asarray(data, np.int32), name=name, **GEOMETRY)


def top_half(truth):
    """The cells that reach into rows 0-63, painted whole; and the region rows 0-63."""
    ids = np.unique(truth[:64])
    painted = np.where(np.isin(truth, ids[ids > 0]), truth, 0)
    rectangle = np.array([[0.0, 0.0], [0.0, 128.0], [64.0, 128.0], [64.0, 0.0]])
    return painted, rectangle
