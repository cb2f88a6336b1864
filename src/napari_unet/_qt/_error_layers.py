"""The Inspect panel's error section: a segmentation against reference labels, coloured by what
went wrong (false positives, misses, merges, splits), with the counts and AP@0.5.

The numbers come from :func:`napari_unet.engine.errors.error_map`, computed in a worker thread;
the result goes into a plugin-owned Labels layer ``"<prediction> errors"`` whose values are the
codes of :data:`~napari_unet.engine.errors.ERROR_CLASSES`.
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np
from magicgui.widgets import Container
from qtpy.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

from napari_unet._qt import _controls as controls
from napari_unet._qt._layers import (
    OWNER_KEY,
    geometry_of,
    layer_array,
    layer_combo,
    pick_default,
    put_layer,
    source_key,
)
from napari_unet._qt._worker import Job, start_job, tell_user

ROLE = "errors"
#: colour per code of ERROR_CLASSES
ERROR_COLORS = {
    0: "transparent",
    1: "#4daf4a",  # correct: green
    2: "#e41a1c",  # false positive: red
    3: "#377eb8",  # miss: blue
    4: "#ff7f00",  # merge: orange
    5: "#f781bf",  # split: pink
    None: "transparent",
}


def error_job(pred: Any, ref: Any, axes: str | None = None):
    """Worker thread: the :class:`~napari_unet.engine.errors.ErrorMap` of two label arrays,
    each plane scored on its own; ``axes`` (one letter per axis, e.g. ``YXZ``) say which axes
    are planes, ``None`` detects them
    (:func:`~napari_unet.engine.axes.detect_label_axes`)."""
    from napari_unet.engine.axes import detect_label_axes
    from napari_unet.engine.errors import error_map

    pred, ref = np.asarray(pred), np.asarray(ref)
    if pred.shape != ref.shape:
        raise ValueError(f"the labels {pred.shape} and the reference {ref.shape} differ in shape")
    if not (np.issubdtype(pred.dtype, np.integer) and np.issubdtype(ref.dtype, np.integer)):
        raise ValueError("both layers must hold integer labels")
    return error_map(pred, ref, axes=axes or detect_label_axes(pred.shape))
    yield  # unreachable: makes this a generator for Job


def describe(errors: Any) -> str:
    """One line: AP@0.5 and the counts, e.g. ``"AP@0.5 0.750: 6 correct, 1 false positive…"``."""
    from napari_unet.engine.wording import count

    c = errors.counts
    return (
        f"AP@0.5 {errors.ap50:.3f}: {c['correct']} correct, "
        f"{count(c['false positives'], 'false positive')}, {count(c['misses'], 'miss', 'misses')}, "
        f"{count(c['merges'], 'merge')} (of {count(c['merged'], 'cell')}), "
        f"{count(c['splits'], 'split')} (in {count(c['pieces'], 'piece')}); "
        f"{count(c['predicted'], 'object')}, {c['reference']} in the reference"
    )


class ErrorTools(QWidget):
    """Pick a segmentation and reference labels, click *Show errors*.

    Attributes
    ----------
    errors_layer : the layer last shown; ``last`` : the last ErrorMap; ``job`` : the last job.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = viewer
        self.errors_layer: Any = None
        self.last: Any = None
        self.job: Job | None = None
        self.prediction = layer_combo(
            viewer,
            napari.layers.Labels,
            label="segmentation",
            tooltip="The labels to check (e.g. a Segment result).",
            exclude_plugin_layers=False,
        )
        self.reference = layer_combo(
            viewer,
            napari.layers.Labels,
            label="reference",
            tooltip="Labels you trust (ground truth) of the same shape.",
            exclude_plugin_layers=True,
        )
        self.axes = controls.axes_combo()
        self.axes.tooltip = (
            "How the labels' axes are ordered: Y and X, and the planes (Z, T), each plane "
            "scored on its own. Detected; shown for stacks."
        )
        self.button = QPushButton("Show errors")
        self.button.setToolTip(
            "Colour the segmentation: green correct, red false positive, blue miss, orange "
            "merge, pink split."
        )
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(Container(widgets=[self.prediction, self.reference, self.axes]).native)
        layout.addWidget(self.button)
        layout.addWidget(self.status)
        pick_default(self.reference, lambda layer: layer is not self.prediction.value)
        self._axes_follower = controls.AxesFollower(
            self, self.prediction, self.axes, update=controls.update_label_axes
        )
        self.button.clicked.connect(lambda: self.show_errors())

    def show_errors(self) -> Job | None:
        """Compute and show the error layer; returns the job (``None`` if it could not start).
        While a comparison runs the button is off and a second call returns that job, as
        Segment and Fine-tune do (two clicks ran two comparisons, and the later one won)."""
        if self.job is not None and self.job.running:
            return self.job
        pred, ref = self.prediction.value, self.reference.value
        if pred is None or ref is None or pred is ref:
            tell_user("Errors failed: choose a segmentation and a different reference layer.")
            return None
        self.status.setText(f"comparing {pred.name} with {ref.name}…")
        data = (layer_array(pred), layer_array(ref))  # a multiscale layer's full resolution
        self.job = start_job(
            error_job,
            *data,
            controls.chosen_axes(self.axes, pred),
            what="Errors",
            show_progress=False,
            on_result=lambda errors: self._show(pred, errors, (ref, *data)),
            on_error=self._failed,
            on_done=self._done,
        )
        self.button.setEnabled(False)
        return self.job

    def _done(self, _job: Job) -> None:
        """The comparison is over (shown, dropped or failed): *Show errors* can run again."""
        try:
            self.button.setEnabled(True)
        except RuntimeError:  # the panel is already gone
            pass

    def cancel(self) -> None:
        """Drop the running comparison: its error layer is not shown."""
        if self.job is not None:
            self.job.cancel()

    def _failed(self, _exc: BaseException) -> None:
        """The comparison failed (the notification says why): the status line says so
        instead of 'comparing …' for ever."""
        controls.show_text(self.status, "failed (see the notification)")

    def _show(self, pred: Any, errors: Any, compared: tuple[Any, Any, Any]) -> None:
        """Show ``errors`` of ``pred``; ``compared``: the reference layer, and the two arrays
        compared (the layers' data when the job started)."""
        if pred not in self.viewer.layers:
            controls.show_text(self.status, f"errors not shown: the segmentation '{pred.name}' was removed")
            return
        ref, pred_data, ref_data = compared
        for layer, data in ((pred, pred_data), (ref, ref_data)):
            if layer_array(layer) is not data:
                controls.show_text(
                    self.status, f"errors not shown: the data of '{layer.name}' were replaced"
                )
                return
        from napari.utils.colormaps import DirectLabelColormap

        self.last = errors
        self.errors_layer = put_layer(
            self.viewer,
            errors.codes,
            kind="labels",
            name=f"{pred.name} errors",
            key=f"{ROLE}:{source_key(pred)}",
            role=ROLE,
            geometry=geometry_of(pred),
            colormap=DirectLabelColormap(color_dict=ERROR_COLORS),
            opacity=0.6,
        )
        self.errors_layer.metadata.setdefault(OWNER_KEY, ROLE)
        try:
            self.status.setText(describe(errors))
        except RuntimeError:  # the panel is already gone; the layer holds the result
            pass
