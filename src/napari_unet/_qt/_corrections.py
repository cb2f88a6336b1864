"""The correction loop in the Segment panel: correct a copy of the result, split merges with a
drawn line, see where the model is unsure and where to correct next.

*Correct this result* copies the Segment result into a new Labels layer ``"<name> corrections"``
(the user's layers are never changed) and adds a Shapes layer ``"<name> split lines"``: a line
or path drawn there cuts the object it crosses in two (`_split_lines`).
The user deletes false objects and paints missed cells with napari's own tools. Fine-tune then
learns from the corrected area only
(:func:`~napari_unet._qt._correction_layers.corrected_annotation`, called by
``_annotations.painted_plane``): the area drawn in the panel's *annotated regions*, or, without
one, the area inferred from the edits.

*Show uncertainty* segments the current plane under four flips and turns
(:func:`engine.uncertainty.tta_uncertainty`) and shows the disagreement as an Image layer, the
per-object agreement as another, and the boxes that hold the most expected errors
(:func:`engine.uncertainty.expected_errors`) as a ranked Shapes layer
``"<image> annotate here next"``.
"""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from napari_unet._qt import _controls as controls
from napari_unet._qt._correction_layers import (
    ROLE,
    add_corrections,
    as_copied,
    copy_labels_job,
    copy_of,
    corrections_store,
    start_correction,
)
from napari_unet._qt._layers import (
    KEY_KEY,
    OWNER_KEY,
    current_image_plane,
    embedded_plane,
    plane_index,
    put_layer,
    remove_owned,
    source_key,
    spatial_geometry,
)
from napari_unet._qt._lazy import is_lazy
from napari_unet._qt._progress import PanelProgress
from napari_unet._qt._segment_call import engine_options, fall_back_after
from napari_unet._qt._split_lines import add_split_lines, split_lines_of
from napari_unet._qt._stale import is_stale
from napari_unet._qt._uncertainty_job import MIN_BOX_ERRORS, box_on_plane, uncertainty_job
from napari_unet._qt._worker import Job, start_job, tell_user
from napari_unet.engine.events import BlockDone, TileDone
from napari_unet.engine.wording import count


class CorrectionTools(QWidget):
    """The Segment panel's correction section: *Correct this result* and *Show uncertainty*.

    Parameters
    ----------
    viewer : the napari viewer.
    panel : the Segment panel (its ``labels_layer``, ``labels_image``, ``image``,
        ``diameter``, ``device`` and ``selected_model()`` are read).

    Attributes
    ----------
    corrections, split_lines : the layers of the last *Correct this result*.
    uncertainty_layer, boxes_layer, confidence_layer : the layers of the last uncertainty.
    job : the uncertainty job.
    copy_job : the job copying a block-wise result into its corrections store (or ``None``).
    """

    def __init__(self, viewer: Any, panel: Any) -> None:
        super().__init__()
        self.viewer = viewer
        self.panel = panel
        self.corrections: Any = None
        self.split_lines: Any = None
        self.uncertainty_layer: Any = None
        self.boxes_layer: Any = None
        self.confidence_layer: Any = None
        self.job: Job | None = None
        self.copy_job: Job | None = None
        #: why the running uncertainty job was stopped (the image removed, the panel closed)
        self._stopped_because: str | None = None
        row, (self.correct_button, self.uncertainty_button) = controls.button_row(
            (
                "Correct this result",
                "Copy the result into '<labels> corrections' to fix it: delete false objects, "
                "paint missed cells, draw a line in 'split lines' to cut a merge. Fine-tune on "
                "it learns from the corrected area only.",
            ),
            (
                "Show uncertainty",
                "Segment the current plane in 4 flips and turns; show where they disagree and "
                "the boxes where a correction would teach the model most (4x the work).",
            ),
        )
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.progress = PanelProgress()  # the uncertainty's four passes
        self.copy_progress = PanelProgress()  # copying a block-wise result
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.status)
        layout.addWidget(self.progress.bar)
        layout.addWidget(self.copy_progress.bar)
        self.correct_button.clicked.connect(lambda: self.correct())
        self.uncertainty_button.clicked.connect(lambda: self.show_uncertainty())

    def correct(self) -> Any:
        """Make the editable copy of the last Segment result; returns the copy or None. A copy
        of the same result (unchanged since) that is still in the viewer is reused, not made
        again.

        A block-wise (lazy) result, maybe larger than memory, is copied chunk by chunk into a
        new zarr store in a worker (``copy_job``; None is returned and the copy is added when
        it is done): reading it here froze the panel and held the whole store in memory, three
        times."""
        if self.copy_job is not None and self.copy_job.running:
            return None
        layer = self.panel.labels_layer
        if layer is None:
            tell_user("Correction failed: segment an image first.")
            return None
        if layer not in self.viewer.layers:
            tell_user(f"Correction failed: the result '{layer.name}' was removed; segment again.")
            return None
        if is_stale(layer):
            tell_user(
                f"Correction failed: the result '{layer.name}' is of data since replaced; "
                "segment again."
            )
            return None
        existing = copy_of(self.viewer, layer)
        if existing is None and is_lazy(layer.data):
            self._copy_lazy(layer, self.panel.labels_image)
            return None
        if existing is None:
            self.corrections, self.split_lines = start_correction(
                self.viewer, layer, self.panel.labels_image
            )
            again = ""
        else:  # the copy of this very result: go on with it (and its undo history)
            lines = split_lines_of(self.viewer, existing)
            if lines is None:
                lines = add_split_lines(self.viewer, existing)
            self.viewer.layers.selection.active = existing
            self.corrections, self.split_lines = existing, lines
            again = " (already the copy of this result; remove it to start again)"
        self._say_correct(again)
        return self.corrections

    def _say_correct(self, again: str = "") -> None:
        self.status.setText(
            f"correct '{self.corrections.name}'{again}: delete false objects, paint missed "
            f"cells, draw lines in '{self.split_lines.name}' to cut merges; then Fine-tune on it"
        )

    def _copy_lazy(self, layer: Any, image_layer: Any) -> None:
        """Start copying the block-wise result ``layer`` into a new store (:func:`copy_labels_job`)."""
        target = corrections_store(layer)
        source = layer.data  # this very array: copy_of knows the copy of it by identity
        copied = (source, getattr(source, "name", None))
        original = as_copied(source)  # what is copied, and edits are told from, if painted later
        if self.job is None or self.job.done:  # not the reason of an earlier uncertainty
            self._stopped_because = None
        self.correct_button.setEnabled(False)
        self.status.setText(f"copying '{layer.name}' into {target}…")
        self.copy_progress.start("copying…")

        def show(result: Any) -> None:
            data, top = result
            if layer not in self.viewer.layers or layer.data is not source:
                shutil.rmtree(target, ignore_errors=True)  # the copy of what is gone: not kept
                controls.show_text(
                    self.status,
                    f"copy not shown: the result '{layer.name}' was removed or replaced",
                )
                return
            self.corrections, self.split_lines = add_corrections(
                self.viewer, layer, image_layer, data, original, top, copied
            )
            self.corrections.metadata["store"] = str(target)
            self._say_correct(f" (in {target})")

        def on_event(event: Any) -> None:
            if isinstance(event, BlockDone):
                self.copy_progress.show(event.done / event.total if event.total else 0.0, "copying")

        def done(job: Job) -> None:
            self._job_ended(job, self.copy_progress, self.correct_button, "copy")

        self.copy_job = start_job(
            copy_labels_job,
            original,
            target,
            layer.metadata.get("store"),
            what="Correction",
            show_progress=False,
            on_event=on_event,
            on_result=show,
            on_error=lambda _: controls.show_text(
                self.status, "copy failed (see the notification)"
            ),
            on_done=done,
        )

    def show_uncertainty(self) -> Job | None:
        """Start the uncertainty of the current image plane; returns the job (or None)."""
        if self.job is not None and self.job.running:
            return self.job
        layer = self.panel.image.value
        if layer is None:
            tell_user("Uncertainty failed: add or choose an image layer first.")
            return None
        try:
            entry = self.panel.selected_model()
            layout = self.panel.layout_for(layer)
            image, channel_axis = current_image_plane(self.viewer, layer, axes=layout.axes)
        except ValueError as exc:
            tell_user(f"Uncertainty failed: {exc}.")
            return None
        plane = plane_index(self.viewer, layer, layout.axes)
        self._stopped_because = None
        self.status.setText(f"uncertainty of {layer.name}: 4 passes…")
        self.uncertainty_button.setEnabled(False)
        self.progress.start("4 passes…")
        self.job = start_job(
            uncertainty_job,
            image,
            channel_axis,
            entry,
            # segmented as Segment would (threshold, minimum area and confidence, outline,
            # contrast limits), so that its objects are the ones the user corrects
            **engine_options(self.panel.segment_options(), layer),
            device=self.panel.device.value,
            what="Uncertainty",
            description=f"Uncertainty of {layer.name}",
            show_progress=False,  # the panel's own bar: napari's redraws held the event loop
            on_event=self._on_event,
            on_result=lambda result: self._show(layer, layout, plane, result),
            on_error=self._uncertainty_failed,
            on_done=lambda job: self._uncertainty_done(job, layer, watch),
        )

        def watch(event: Any) -> None:  # the image removed or its data replaced: not wanted
            if event.source is layer:
                self.stop(f"the data of '{layer.name}' were replaced")
            elif event.value is layer:
                self.stop(f"the image '{layer.name}' was removed")

        self.viewer.layers.events.removed.connect(watch)
        layer.events.data.connect(watch)
        return self.job

    def stop(self, reason: str) -> None:
        """Stop the running uncertainty job and copy, because of ``reason`` (the status says it)."""
        for job in (self.job, self.copy_job):
            if job is not None and not job.done and not job.cancelled:
                self._stopped_because = reason
                job.cancel()

    def _uncertainty_failed(self, error: BaseException) -> None:
        """The status after a failed uncertainty; a model file that could not be loaded stops
        being the session's model, as after a failed Segment."""
        message = fall_back_after(error, self.panel.session) or "failed (see the notification)"
        controls.show_text(self.status, message)

    def _on_event(self, event: Any) -> None:
        if isinstance(event, TileDone):  # counted over the four passes
            self.progress.show(event.done / event.total if event.total else 0.0, "4 passes")

    def _uncertainty_done(self, job: Job, layer: Any, watch: Any) -> None:
        self.viewer.layers.events.removed.disconnect(watch)
        layer.events.data.disconnect(watch)
        self._job_ended(job, self.progress, self.uncertainty_button, "uncertainty")

    def _job_ended(self, job: Job, progress: PanelProgress, button: Any, what: str) -> None:
        """The end of a job of these tools: its bar stopped, its button back on, and why it
        stopped when it was cancelled (nothing more once the panel is gone)."""
        progress.stop()
        try:
            button.setEnabled(True)
        except RuntimeError:  # the panel is already gone
            return
        if job.cancelled:
            controls.show_text(
                self.status, f"{what} stopped: {self._stopped_because or 'cancelled'}"
            )

    def _show(self, layer: Any, layout: Any, plane: tuple[Any, ...], result: Any) -> None:
        """Show the uncertainty of plane ``plane`` (a full ``plane_index``) of ``layer`` on that
        plane, in the layer's label axes (``layout``)."""
        if layer not in self.viewer.layers:
            controls.show_text(
                self.status, f"uncertainty not shown: the image '{layer.name}' was removed"
            )
            return
        u, boxes, confidence = result
        uncertainty, geometry = embedded_plane(u.uncertainty, layer, plane, layout=layout)
        self.uncertainty_layer = put_layer(
            self.viewer,
            uncertainty,
            kind="image",
            name=f"{layer.name} uncertainty",
            key=f"{ROLE}:uncertainty:{source_key(layer)}",
            role=ROLE,
            geometry=geometry,
            colormap="magma",
            blending="additive",
            contrast_limits=(0.0, max(float(u.uncertainty.max()), 1e-3)),
        )
        agreement = np.zeros(u.labels.shape, np.float32)
        if confidence["id"].size:
            lookup = np.zeros(int(u.labels.max()) + 1, np.float32)
            lookup[confidence["id"]] = confidence["agreement"]
            agreement = lookup[u.labels]
        self.confidence_layer = put_layer(
            self.viewer,
            embedded_plane(agreement, layer, plane, layout=layout)[0],
            kind="image",
            name=f"{layer.name} object confidence",
            key=f"{ROLE}:confidence:{source_key(layer)}",
            role=ROLE,
            geometry=geometry,
            colormap="viridis",
            contrast_limits=(0.0, 1.0),
            visible=False,
        )
        rects = [box_on_plane(box, layout, plane) for box, _ in boxes]
        key = f"{ROLE}:boxes:{source_key(layer)}"
        remove_owned(self.viewer, key)
        box_geometry = spatial_geometry(layer, layout)
        self.boxes_layer = self.viewer.add_shapes(
            rects,
            ndim=len(box_geometry["scale"]),  # no box: an empty layer is 2-D unless told
            shape_type="rectangle",
            name=f"{layer.name} annotate here next",
            edge_color="cyan",
            face_color="transparent",
            edge_width=3,
            features={"rank": np.arange(1, len(rects) + 1)},
            text={"string": "{rank}", "color": "cyan", "anchor": "upper_left"},
            metadata={OWNER_KEY: ROLE, KEY_KEY: key},
            **box_geometry,
        )
        order = np.argsort(confidence["agreement"])[:5]
        least = ", ".join(
            f"{int(confidence['id'][i])} ({confidence['agreement'][i]:.2f})" for i in order
        )
        at = tuple(v for v in plane if not isinstance(v, slice))
        self.status.setText(
            f"uncertainty of {layer.name}{' plane ' + str(at) if at else ''}: mean "
            f"{float(u.uncertainty.mean()):.3f}, "
            + (
                f"{count(len(rects), 'box', 'boxes')} ranked"
                if rects
                else f"no box ranked (none holds {MIN_BOX_ERRORS:g} expected errors)"
            )
            + f"; least confident objects: {least or 'none'}"
        )
