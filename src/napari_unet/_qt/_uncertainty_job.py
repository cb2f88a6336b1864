"""*Show uncertainty*'s work: the worker-thread job (the test-time-transform uncertainty of one
image plane, its ranked "annotate here next" boxes and object confidences) and the boxes'
corners on the image's plane. Used by :class:`~napari_unet._qt._corrections.CorrectionTools`."""

from __future__ import annotations

from typing import Any

import numpy as np

#: how many ranked boxes "annotate here next" shows
N_BOXES = 5
#: a box's side, in cell diameters
BOX_DIAMETERS = 3.0
#: a box is shown only where it holds more expected errors than this
#: (:func:`~napari_unet.engine.uncertainty.expected_errors`): half a cell's worth, so that an
#: empty or noise-only field, where the passes differ only by rounding, shows none
MIN_BOX_ERRORS = 0.5


def box_on_plane(box: tuple[int, int, int, int], layout: Any, plane: tuple[Any, ...]) -> np.ndarray:
    """The four corners of a ``(row0, col0, row1, col1)`` box of plane ``plane`` (a full
    ``plane_index`` of an image read by ``layout``) as ``(4, D)`` coordinates in the image's
    label axes (the plane's position on each plane axis)."""
    r0, c0, r1, c1 = box
    corners = [(r0, c0), (r0, c1), (r1, c1), (r1, c0)]
    out = []
    for r, c in corners:
        point = []
        for letter, value in zip(layout.axes, plane, strict=True):
            if letter == "Y":
                point.append(r)
            elif letter == "X":
                point.append(c)
            elif letter != "C":
                point.append(value)
        out.append(point)
    return np.asarray(out, float)


def uncertainty_job(image: Any, channel_axis: int | None, entry: Any, **options: Any):
    """Worker thread: the TTA uncertainty of one image plane, its boxes and object confidences.

    Returns (Uncertainty, boxes, confidence dict); see :mod:`napari_unet.engine.uncertainty`.
    """
    from napari_unet._qt._segment_call import load_entry
    from napari_unet.engine.api import model_diameter
    from napari_unet.engine.layout import gray_for_model
    from napari_unet.engine.uncertainty import (
        annotation_boxes,
        expected_errors,
        iter_tta_uncertainty,
        object_scores,
    )

    model = load_entry(entry)  # a broken file: ModelUnusable, and the panel falls back
    image, channel_axis = gray_for_model(
        np.asarray(image), channel_axis=channel_axis, in_channels=int(model[0].config.in_channels)
    )
    if channel_axis is not None and image.shape[channel_axis] == 1:  # (Y, X, 1): one channel
        image, channel_axis = np.squeeze(image, axis=channel_axis), None
    if channel_axis is not None:
        raise ValueError("the uncertainty needs a one-channel image (or RGB)")
    result = yield from iter_tta_uncertainty(image, model, **options)  # Cancel stops it
    # no estimate (too few cells found): the image was segmented at the model's own diameter
    diameter = result.diameter or model_diameter(model[1]) or 30.0
    side = max(16, round(BOX_DIAMETERS * diameter))
    errors = expected_errors(
        result.labels, result.uncertainty, result.probabilities,
        cell_area=np.pi / 4.0 * diameter**2,
    )  # fmt: skip
    boxes = annotation_boxes(errors, box=side, n=N_BOXES, min_score=MIN_BOX_ERRORS)
    confidence = object_scores(result.labels, result.uncertainty, result.probabilities)
    return result, boxes, confidence
