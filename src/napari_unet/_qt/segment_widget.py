"""The Segment dock widget: one label per cell, computed off the GUI thread.

Pick an image layer and a model, click *Segment*. The engine's :func:`iter_segment` runs in a
napari worker thread; the panel's progress bar (and napari's) follows its tiles and planes,
*Cancel* stops it at the next tile, and the result lands in a plugin-owned Labels layer
``"<image> labels"`` (updated in place on a rerun, unless the user has corrected it: then it is
left as it is and the result goes into a new layer), optionally with the cell probability as an
Image layer. Removing the image cancels its job. A lazy (dask or zarr) layer is not loaded: it
is segmented block by block into a zarr store (:mod:`napari_unet._qt._lazy`) that is shown as a
lazy Labels layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import napari
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
)
from qtpy.QtWidgets import QMessageBox, QWidget

from napari_unet._qt import _controls as controls
from napari_unet._qt._closing import ClosingWatch
from napari_unet._qt._corrections import CorrectionTools
from napari_unet._qt._disconnect import disconnect_when_destroyed
from napari_unet._qt._layers import (
    Layout,
    layer_array,
    plan_layout,
    show_segmentation,
)
from napari_unet._qt._partial import show_partial
from napari_unet._qt._progress import PanelProgress, tile_fraction
from napari_unet._qt._segment_call import (
    SEGMENT_OPTION_NAMES,
    RescaleQuestion,
    engine_options,
    fall_back_after,
    segment_job,
)
from napari_unet._qt._segment_model import MODEL_FILE, ModelChoice
from napari_unet._qt._session import ModelEntry, session_for
from napari_unet._qt._stale import watch_for_stale
from napari_unet._qt._worker import Job, start_job, tell_user
from napari_unet.engine.events import BlockDone, PlaneSegmented, TileDone, TileSizeReduced
from napari_unet.engine.label_step import BACKGROUND_THRESHOLD, MIN_CONFIDENCE, SEED_THRESHOLD
from napari_unet.engine.wording import count

__all__ = ["MODEL_FILE", "SegmentWidget"]  # MODEL_FILE: the model picker's file choice


class SegmentWidget(QWidget, ModelChoice):
    """Segment cells in an image layer with a U-Net.

    napari injects the viewer (``napari_viewer``).

    Attributes
    ----------
    job : the running (or last) :class:`~napari_unet._qt._worker.Job`, or ``None``.
    labels_layer : the layer the last segmentation went into; ``labels_image``: its image.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        watch_for_stale(napari_viewer)
        self.job: Job | None = None
        self.labels_layer: Any = None
        self.labels_image: Any = None
        self._job_layer: Any = None
        self._job_layout: Layout | None = None
        self._partial: Any = None
        self._rescale_question: RescaleQuestion | None = None
        self.progress = PanelProgress()
        self.lazy_input = False

        self.image = controls.image_combo(
            napari_viewer, "The image to segment: 2D, 2D with channels (RGB), or a Z / time stack."
        )
        self.axes = controls.axes_combo()
        self.model = ComboBox(label="model", choices=self._model_choices)
        controls.elide_combo(self.model)
        self.model_file = FileEdit(
            label="model file",
            mode="r",
            filter="U-Net model or BioImage.IO package (*.pt *.zip *.yaml)",
            visible=False,
        )
        self.trust_code = CheckBox(
            label="run package code",
            value=False,
            visible=False,
            tooltip="A foreign BioImage.IO package (from the model zoo) brings its own network "
            "as code: Python or a TorchScript program. Tick this only for packages you trust. "
            "Packages exported by napari-unet never need it.",
        )
        self.device = controls.device_combo()
        self.diameter = controls.diameter_field(
            "Typical cell diameter in pixels (not µm); 0 estimates it. The image is rescaled to "
            "the size the model was trained at; beyond 4x either way you are asked first."
        )
        self.threshold = controls.number_control(
            "probability threshold",
            SEED_THRESHOLD,
            (0.05, 0.95),
            0.05,
            "Pixels above this cell probability seed a cell; lower it to find dim cells, "
            "raise it to split touching cells.",
        )
        self.min_size = controls.count_control(
            "minimum cell area (px²)",
            0,
            (0, 1_000_000),
            "Objects with fewer pixels (an area) are removed; 0 chooses from the cell size.",
        )
        self.min_confidence = controls.number_control(
            "minimum confidence",
            MIN_CONFIDENCE,
            (0.0, 0.95),
            0.05,
            "Objects whose mean cell probability is below this are removed (faint debris the "
            "network half believes in); 0 keeps every object. Lower it for a weakly trained model.",
        )
        self.background_threshold = controls.number_control(
            "outline threshold",
            BACKGROUND_THRESHOLD,
            (0.05, 0.95),
            0.05,
            "Where outlines run: a cell's pixels are those whose background probability is "
            "below this. 0.5 is the model's own outline; lower draws tighter outlines (0.3: "
            "about 10 % less area, for labels drawn tight), higher looser ones.",
        )
        self.tta = CheckBox(
            label="average flips and turns (8x slower)",
            value=False,
            tooltip="Test-time augmentation: the network sees every tile in its 8 flips and "
            "quarter turns and the results are averaged; steadier edges, 8 times the work.",
        )
        self.use_contrast = CheckBox(
            label="normalise by the contrast limits",
            value=False,
            tooltip="Map the image layer's contrast limits (what shows black and white) to the "
            "model's 0 and 1, instead of the image's 1st and 99.8th percentiles. Set the "
            "contrast so that the cells look right, then Segment: for images where bright "
            "debris, a saturated region or a well edge swamps the automatic range.",
        )
        self.show_probabilities = CheckBox(label="add the probability map", value=False)
        self.tile_size = Label(label="tiles", value="sized automatically (from free memory)")
        self.store = FileEdit(
            label="labels store", mode="w", filter="zarr store (*.zarr)", visible=False,
            tooltip="A lazy (dask/zarr) image is segmented block by block into this new zarr "
            "store, shown as a lazy labels layer; empty: a new store in the temporary folder.",
        )
        self.status = controls.status_label()
        self.form = Container(
            widgets=[
                self.image,
                self.axes,
                self.model,
                self.model_file,
                self.trust_code,
                self.device,
                self.diameter,
                self.threshold,
                self.min_size,
                self.min_confidence,
                self.background_threshold,
                self.tta,
                self.use_contrast,
                self.show_probabilities,
                self.tile_size,
                self.store,
            ]
        )

        buttons, (self.run_button, self.cancel_button) = controls.button_row(
            ("Segment", "Segment the image; the result goes into '<image> labels'."),
            ("Cancel", "Stop the segmentation at the next tile."),
        )
        self.cancel_button.setEnabled(False)

        layout = controls.scroll_layout(self)
        layout.addWidget(self.form.native)
        layout.addLayout(buttons)
        layout.addWidget(self.progress.bar)
        layout.addWidget(self.status.native)
        self.corrections = CorrectionTools(napari_viewer, self)
        layout.addWidget(self.corrections)
        layout.addStretch(1)

        self.run_button.clicked.connect(self.segment)
        self.cancel_button.clicked.connect(self.cancel)
        self.model.changed.connect(self._model_changed)
        self.model_file.changed.connect(self._update_trust)
        # dropped when the panel is destroyed; not by a closure on ``destroyed`` (see Disconnector)
        self._disconnector = disconnect_when_destroyed(self)
        self._disconnector.connect(self.session.changed, self._session_changed)
        self._select_entry(self.session.current)
        self._axes_follower = controls.AxesFollower(
            self, self.image, self.axes, then=self._update_store
        )
        for name in SEGMENT_OPTION_NAMES:
            getattr(self, name).changed.connect(self._publish_options)
        self.use_contrast.changed.connect(self._publish_options)
        self._publish_options()
        self._disconnector.connect(napari_viewer.layers.events.removed, self._layer_removed)
        self._closing = ClosingWatch(self, self._panel_closed)

    # -- layout ------------------------------------------------------------------------------
    def _update_store(self) -> None:
        """Offer the labels store for a lazy image (after the axes, :class:`AxesFollower`)."""
        from napari_unet._qt._lazy import is_lazy

        layer = self.image.value
        self.lazy_input = layer is not None and is_lazy(layer_array(layer))
        self.store.visible = self.lazy_input

    def layout_for(self, layer: Any) -> Layout:
        """How ``layer`` is read: the chosen axes (see
        :func:`~napari_unet._qt._layers.plan_layout`)."""
        return plan_layout(layer, axes=controls.chosen_axes(self.axes, layer))

    # -- run ---------------------------------------------------------------------------------
    def confirm_rescale(self, question: RescaleQuestion) -> bool:
        """Ask whether to rescale the image by an extreme factor; ``True`` means yes."""
        answer = QMessageBox.question(
            self,
            "Rescale the image?",
            f"With a cell diameter of {question.diameter:g} px the image is rescaled by "
            f"{question.factor:.3g}x (the model was trained on cells of {question.trained:g} "
            "px), which can take much longer and rarely helps. Was the diameter typed in µm "
            "instead of pixels? Segment anyway?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

    def segment(self, *, confirmed: bool = False) -> Job | None:
        """Start segmenting the chosen image; returns the job (``None`` if it could not start).
        ``confirmed``: do not ask about an extreme rescaling."""
        if self.job is not None and self.job.running:
            return self.job
        layer = self.image.value
        if layer is None:
            tell_user("Segmentation failed: add or choose an image layer first.")
            return None
        try:
            entry = self.selected_model()
            layout = self.layout_for(layer)
        except ValueError as exc:
            tell_user(f"Segmentation failed: {exc}.")
            return None
        options = {"device": self.device.value, **engine_options(self.segment_options(), layer)}
        from napari_unet._qt._lazy import is_lazy

        if is_lazy(layer_array(layer)):
            return self._segment_lazy(layer, layout, entry, options)
        from napari_unet.engine.partial import PartialLabels

        self._set_running(True)
        self._job_layer, self._job_layout, self._partial = layer, layout, PartialLabels()
        layer.events.data.connect(self._image_replaced)
        self.progress.start()
        self.status.value = f"segmenting {layer.name} with {entry.label}…"
        self.job = start_job(
            segment_job,
            layer_array(layer),
            layout,
            entry,
            confirmed=confirmed,
            what="Segmentation",
            description=f"Segmenting {layer.name}",
            on_event=self._on_event,
            on_result=lambda result: self._on_result(layer, layout, result),
            on_done=self._on_done,
            show_progress=False,  # the panel's own bar: napari's redraws held the event loop
            **options,
        )
        return self.job

    def segment_options(self) -> dict[str, Any]:
        """The options that decide the result (:data:`SEGMENT_OPTION_NAMES`), as the engine
        takes them; shared with the Fine-tune preview through the session."""
        return {
            "threshold": float(self.threshold.value),
            "min_size": int(self.min_size.value) or None,
            "min_confidence": float(self.min_confidence.value),
            "background_threshold": float(self.background_threshold.value),
            "diameter": float(self.diameter.value) or None,
            "tta": bool(self.tta.value),
            "use_contrast_limits": bool(self.use_contrast.value),
        }

    def _publish_options(self, *_: Any) -> None:
        self.session.segment_options = self.segment_options()

    def _segment_lazy(self, layer: Any, layout: Layout, entry: ModelEntry, options: dict) -> Job | None:
        """Segment a lazy layer block by block into a new zarr store (module notes)."""
        from napari_unet._qt._lazy import default_store, lazy_segment_job
        from napari_unet.engine.zarr_io import check_store_target

        named = str(self.store.value) not in ("", ".")
        store = Path(self.store.value) if named else default_store(layer.name)
        if store.suffix.lower() != ".zarr":
            store = store.with_name(store.name + ".zarr")
        if store.exists():  # the engine's sentence names --overwrite, which the panel lacks
            tell_user(f"Segmentation failed: {store} already exists; name a new labels store.")
            return None
        try:
            check_store_target(store, overwrite=False)
        except OSError as exc:
            tell_user(f"Segmentation failed: {exc}.")
            return None
        self._set_running(True)
        self._job_layer = layer
        layer.events.data.connect(self._image_replaced)
        self.progress.start()
        self.status.value = f"segmenting {layer.name} block by block into {store}…"
        self.job = start_job(
            lazy_segment_job,
            layer_array(layer),
            layout,
            entry,
            store,
            what="Segmentation",
            description=f"Segmenting {layer.name} by blocks",
            show_progress=False,  # the panel's own bar, as in memory
            on_event=self._on_event,
            on_result=lambda result: self._on_result(layer, layout, result),
            on_done=self._on_done,
            **options,
        )
        return self.job

    def cancel(self) -> None:
        """Stop the running segmentation at the next tile."""
        if self.job is not None:
            self.job.cancel()
            self.cancel_button.setEnabled(False)

    def _on_event(self, event: Any) -> None:
        match event:
            case TileDone():
                self.progress.show(*tile_fraction(event))
            case PlaneSegmented():
                self._partial.add(event)
            case BlockDone():
                self.progress.show(event.done / event.total, f"block {event.done} of {event.total}")
            case TileSizeReduced():
                self.tile_size.value = f"{event.new} px (reduced: {event.reason})"

    def _layer_removed(self, event: Any) -> None:
        """The image of the running job was removed: cancel the job."""
        job = self.job
        if job is None or job.done or event.value is not self._job_layer:
            return
        job.cancel()
        controls.show_text(self.status, f"cancelled: the image '{event.value.name}' was removed")

    def _panel_closed(self) -> None:
        """The panel was closed (:mod:`~napari_unet._qt._closing`): its Segment and uncertainty
        jobs are cancelled, and nothing they made is shown."""
        if self.job is not None:
            self.job.cancel()
        self.corrections.stop("the panel was closed")

    def _image_replaced(self, event: Any) -> None:
        """The data of the running job's image were replaced (another shape, another image):
        cancel the job, whose result would not lie over them."""
        job, layer = self.job, self._job_layer
        if job is None or job.done or event.source is not layer:
            return
        job.cancel()
        controls.show_text(
            self.status, f"cancelled: the data of '{layer.name}' were replaced; segment again"
        )

    def _on_result(self, layer: Any, layout: Layout, result: Any) -> None:
        if layer not in self.viewer.layers:
            return
        if isinstance(result, RescaleQuestion):
            self.status.value = (
                f"not segmented: a diameter of {result.diameter:g} px would rescale the image "
                f"by {result.factor:.3g}x"
            )
            self._rescale_question = result
            return
        from napari_unet._qt._lazy import LazyResult, show_lazy_labels

        if isinstance(result, LazyResult):
            self.labels_layer, self.labels_image = show_lazy_labels(self.viewer, layer, result), layer
            seconds = self.progress.elapsed()
            self.status.value = f"{count(result.n_objects, 'cell')} in {seconds:.1f} s -> {result.store}"
            return
        before, before_image = self.labels_layer, self.labels_image
        self.labels_layer = show_segmentation(
            self.viewer, layer, layout, result, probabilities=self.show_probabilities.value
        )
        self.labels_image = layer
        n_cells = int(result.labels.max()) if result.labels.size else 0
        seconds = self.progress.elapsed()
        diameter = f", cell diameter {result.diameter:.1f} px" if result.diameter else ""
        text = f"{count(n_cells, 'cell')} in {seconds:.1f} s{diameter}"
        # only a result of this image that the user corrected is kept beside the new one
        kept = before is not None and before in self.viewer.layers and before_image is layer
        if kept and before is not self.labels_layer and before.name != self.labels_layer.name:
            text += f"; your corrected '{before.name}' is kept, the result is in a new layer"
        self.status.value = text

    def _on_done(self, job: Job) -> None:
        layer, layout, partial = self._job_layer, self._job_layout, self._partial
        self._job_layer = self._job_layout = self._partial = None
        if layer is not None:
            layer.events.data.disconnect(self._image_replaced)
        question, self._rescale_question = self._rescale_question, None
        if question is not None:  # asked once the job is over, so that a new one can start
            self._set_running(False)
            if self.confirm_rescale(question):
                self.segment(confirmed=True)
            return
        try:
            self.progress.stop()
            if job.cancelled and self._closing.closed:
                self.status.value = "cancelled: the panel was closed"
            elif job.cancelled and not self.status.value.startswith("cancelled"):
                self.status.value = "cancelled"
                kept = show_partial(self.viewer, layer, layout, partial) if partial else None
                if kept is not None:
                    self.status.value = f"cancelled; the planes done are in '{kept.name}'"
            elif job.error is not None:
                self.status.value = self._failure_text(job.error)
            self._set_running(False)
        except RuntimeError:  # the panel is already gone (the viewer closed during the job)
            pass

    def _failure_text(self, error: BaseException) -> str:
        """The status line after a failed job. A model that could not be loaded gives way to
        the one used before (:meth:`~napari_unet._qt._session.Session.fall_back`), so that the
        next Segment does not fail the same way; the line names the file."""
        return fall_back_after(error, self.session) or "failed (see the notification)"

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
