"""The Fine-tune dock widget: adapt the current model to a few painted cells, live.

Pick an image layer, a Labels layer with a few painted cells (one id per cell) and, optionally,
a Shapes layer of *annotated regions* (inside them unpainted pixels are background, outside they
are ignored). *Start* runs :func:`~napari_unet._qt._finetune_job.finetune_job` in a worker
thread on the plane the viewer shows, starting from the session's current model; the panel shows
the weight map, the augmented tiles, a preview segmentation, the loss plot and the progress
(seconds per step, elapsed, ETA; refreshed at most every :data:`DISPLAY_INTERVAL_MS`). Training
stops after the time budget or the steps, whichever comes first, or at *Stop*; the model of the
last completed step is kept, scored against the painted cells before and after, and becomes
Segment's model only when the user clicks *Use for Segment*; *Save model…* writes it atomically.
Closing the panel stops a run (its model could no longer be used or saved).
The user's layers are never modified. See docs/architecture.md, "Fine-tune", for the whole flow.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import napari
from napari.utils.notifications import show_warning
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QWidget

from napari_unet._qt._closing import ClosingWatch
from napari_unet._qt._controls import (
    button_row,
    chosen_axes,
    scroll_layout,
    show_model_name,
    show_text,
    status_label,
)
from napari_unet._qt._disconnect import disconnect_when_destroyed
from napari_unet._qt._finetune_checks import closing_status
from napari_unet._qt._finetune_job import (
    ChoosingConfidence,
    ConfidenceChosen,
    FineTuneRequest,
    RunState,
    ScoreBefore,
    WeightMapReady,
    finetune_job,
    kept_model,
    snapshot_model,
)
from napari_unet._qt._finetune_preview import LivePreview
from napari_unet._qt._finetune_save import ModelSaving
from napari_unet._qt._finetune_settings import FineTuneSettings
from napari_unet._qt._finetune_teaching import TeachingLayers
from napari_unet._qt._layers import Layout, plan_layout, plane_index
from napari_unet._qt._loss_plot import LiveProgress, LossPlot
from napari_unet._qt._progress import PanelProgress, duration
from napari_unet._qt._segment_call import fall_back_after
from napari_unet._qt._session import ModelEntry, session_for
from napari_unet._qt._stale import DISPLAY_KINDS, remove_made_from, watch_for_stale
from napari_unet._qt._worker import Job, start_job, tell_user
from napari_unet.engine.events import ModelSnapshot

#: the live displays (plot, status, augmentation layers) are refreshed at most this often
DISPLAY_INTERVAL_MS = 250


class FineTuneWidget(QWidget, FineTuneSettings, ModelSaving, TeachingLayers):
    """Fine-tune the current U-Net on a few painted cells, with live feedback.

    napari injects the viewer (``napari_viewer``).

    Attributes
    ----------
    job : the running (or last) training :class:`~napari_unet._qt._worker.Job`, or ``None``.
    run : the :class:`RunState` of that job.
    result_entry : the :class:`ModelEntry` of the model this widget fine-tuned last, or ``None``
        (Segment uses it after *Use for Segment*).
    preview : the :class:`LivePreview` (its ``runner``, and ``source``: ``"step N"`` for a
        snapshot of the running training, else the model's label).
    save_job : the last *Save model…* job.
    plot : the :class:`LossPlot`; ``progress``: the :class:`PanelProgress` bar.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        watch_for_stale(napari_viewer)
        self.job: Job | None = None
        self.run: RunState | None = None
        self.result_entry: ModelEntry | None = None
        self.save_job: Job | None = None
        self._snapshot: Any = None
        #: the diameter the score before training used; previews during training reuse it
        self._training_diameter: float | None = None
        self._next_preview = 0
        self.live = LiveProgress()
        self.progress = PanelProgress()
        self._labels_layer: Any = None
        self._image_layer: Any = None
        self._request: FineTuneRequest | None = None
        #: the painted plane of the run (``_layers.labels_plane_index``), set with the request
        self.label_plane: tuple[Any, ...] = ()
        self._warned: set[str] = set()
        #: the panel was closed during a run (see :meth:`_panel_closed`): its end shows nothing
        self._closed = False
        #: the data of the run's image or painted cells were replaced during the run
        self._replaced = False
        self._why_stopped = ""
        #: the image's layout and plane index of the run (where its closing check is shown)
        self._run_place: tuple[Any, ...] | None = None
        #: the status line that the last run ended with (its closing check builds on it)
        self._outcome: str | None = None

        self.form = self._build_settings(napari_viewer)
        self.status, self.notes, self.preview_info = status_label(), status_label(), status_label()
        self.preview = LivePreview(napari_viewer, self.preview_info)
        row1, (self.start_button, self.stop_button) = button_row(
            ("Start", "Fine-tune the current model on the painted cells."),
            ("Stop", "Stop after the current step and keep that model."),
        )
        row2, (self.preview_button, self.save_button) = button_row(
            ("Refresh preview", "Segment the current plane with the newest weights."),
            (
                "Save model…",
                "Write the fine-tuned model to a file: napari-unet's .pt, or a "
                "BioImage.IO package (.zip) for the model zoo and other tools.",
            ),
        )
        row3, (self.use_button,) = button_row(
            ("Use for Segment", "Make the fine-tuned model the one Segment uses."),
        )
        for button in (self.stop_button, self.save_button, self.use_button):
            button.setEnabled(False)
        self.plot = LossPlot()

        layout = scroll_layout(self)
        layout.addWidget(self.form.native)
        for row in (row1, row2, row3):
            layout.addLayout(row)
        layout.addWidget(self.progress.bar)
        layout.addWidget(self.plot)
        for label in (self.status, self.notes, self.preview_info):
            layout.addWidget(label.native)
        layout.addStretch(1)

        self.timer = QTimer(self)
        self.timer.setInterval(DISPLAY_INTERVAL_MS)
        self.timer.timeout.connect(self._refresh_display)

        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.preview_button.clicked.connect(self.refresh_preview)
        self.live_layers.changed.connect(self._live_layers_changed)
        self.save_button.clicked.connect(self.save_model)
        self.use_button.clicked.connect(self.use_for_segment)
        self._disconnector = disconnect_when_destroyed(self)
        self._disconnector.connect(self.session.changed, self._session_changed)
        self._disconnector.connect(napari_viewer.layers.events.removed, self._layer_removed)
        self._closing = ClosingWatch(self, self._panel_closed)

    # -- session -------------------------------------------------------------------------------
    def _session_changed(self, entry: ModelEntry) -> None:
        try:
            show_model_name(self.start_model, entry)
        except RuntimeError:  # the Qt widget is already gone
            self._disconnect_session()

    def _disconnect_session(self) -> None:
        self.session.changed.disconnect(self._session_changed)

    # -- Start / Stop ----------------------------------------------------------------------------
    def start(self) -> Job | None:
        """Start fine-tuning; returns the job (``None`` if it could not start)."""
        if self.job is not None and self.job.running:
            return self.job
        try:
            request = self.training_request()
        except ValueError as exc:
            tell_user(f"Fine-tuning failed: {exc}.")
            return None
        labels_layer = self.labels.value
        self._labels_layer, self._image_layer = labels_layer, self.image.value
        self._request = request
        self._run_place = self._plane_place(self._image_layer)  # the plane of the run
        self.run = RunState(base_label=request.entry.label, base_kind=request.entry.kind)
        self._snapshot = None
        self._training_diameter = None
        self._closed = False
        self.live = LiveProgress()
        self._next_preview = int(self.preview_every.value)
        self.plot.clear(request.config.steps)
        self.notes.value = ""
        if request.regions is None:
            self._warn(
                "no annotated regions: every unpainted pixel of the plane is taught as "
                "background; draw a Shapes layer around fully painted areas, or paint every cell"
            )
        for text in request.warnings:
            self._warn(text)
        self.status.value = f"fine-tuning {request.entry.label} on {labels_layer.name}…"
        self.progress.start("preparing (weight map, first segmentation)…")
        self._set_running(True)
        self._replaced = False
        self._why_stopped = ""
        for layer in (labels_layer, self._image_layer):
            layer.events.data.connect(self._data_replaced)
        self.job = start_job(
            finetune_job,
            request,
            self.run,
            what="Fine-tuning",
            description=f"Fine-tuning on {labels_layer.name}",
            on_event=self._on_event,
            on_done=self._on_done,
            show_progress=False,  # the panel's own bar: napari's redraws held the event loop
        )
        self.timer.start()
        return self.job

    def stop(self, reason: str = "stopping after the current step…") -> None:
        """Stop training after the step in progress; the model of that step is kept."""
        if self.job is not None and self.job.running:
            self.job.cancel()
            self.stop_button.setEnabled(False)
            self.status.value = reason

    def _panel_closed(self) -> None:
        """Closing the panel (:mod:`~napari_unet._qt._closing`) stops a run, which went on
        unseen until its time budget, updating layers, and whose model could no longer be used
        or saved; a preview on its way is dropped. A save goes on."""
        self._closed = self.job is not None and self.job.running
        if self._closed:
            self.job.cancel()
        self.preview.runner.cancel()
        try:
            self.stop("stopped: the panel was closed")
        except RuntimeError:  # the panel was deleted: no status to show
            pass

    def _layer_removed(self, event: Any) -> None:
        """The image or the painted cells of the running job were removed: stop it. With the
        painted cells of the last run go the displays made of them (:meth:`_drop_displays`)."""
        if event.value is self._labels_layer:
            self._drop_displays(event.value)
        if self.job is not None and self.job.running and not self.job.cancelled:
            if event.value is self._image_layer or event.value is self._labels_layer:
                self._why_stopped = f"'{event.value.name}' was removed"
                self.stop(f"stopping: {self._why_stopped}…")

    def _drop_displays(self, labels_layer: Any) -> None:
        """Remove the weight maps of ``labels_layer`` (removed from the viewer; ``_stale``
        removes them for every panel) and the augmented tile of the run that learnt them:
        drawn from labels no longer shown, they stayed behind as orphans (a weight map of
        nothing, a tile beside a gap). The preview (of the image) and the kept model stay. Any
        event of the run still on its way shows nothing (its labels are gone)."""
        remove_made_from(self.viewer, labels_layer, kinds=DISPLAY_KINDS)
        self._drop_tile()

    def _data_replaced(self, event: Any) -> None:
        """The data of the run's image or painted cells were replaced: stop the run (it learns
        the old data), and show no preview of the old data over the new."""
        self._replaced = True
        self._why_stopped = f"the data of '{event.source.name}' were replaced"
        self.stop(f"stopping: {self._why_stopped}…")

    def _warn(self, text: str) -> None:
        """A warning about the annotations: a line in the panel, and a notification the first
        time (a notification costs the GUI thread a hitch, and the line stays)."""
        if text not in self._warned:
            self._warned.add(text)
            show_warning(f"Fine-tuning: {text}.")
        self.notes.value = "\n".join(filter(None, [self.notes.value, f"⚠ {text}"]))

    def _on_event(self, event: Any) -> None:
        if self.live.record(event, self.plot):
            return
        match event:
            case ModelSnapshot():
                self._on_snapshot(event)
            case WeightMapReady():
                self._show_weights(event.weight_map)
                for text in event.warnings:
                    self._warn(text)
            case ScoreBefore():
                self._training_diameter = event.diameter
                self.progress.set(0.0, "training…")
            case ChoosingConfidence():  # the timer leaves the progress bar to this line
                self.live.training_ended = True
                self.progress.set(1.0, "choosing the minimum confidence on the painted cells…")
            case ConfidenceChosen():
                self.notes.value = "\n".join(
                    filter(None, [self.notes.value, event.calibration.describe()])
                )

    def _on_snapshot(self, event: Any) -> None:
        """Keep the newest snapshot; segment the preview with it every N steps."""
        stale = self._snapshot is not None and event.step < self._snapshot.step
        if stale or self.job is None or self.job.done:  # done: the kept model is current
            return
        self._snapshot = event
        every = int(self.preview_every.value)
        last = self.run is not None and event.step == self.run.config.steps
        if every > 0 and event.step >= self._next_preview and not last:  # last: on_done
            self._next_preview = event.step + every
            self.refresh_preview()

    def _refresh_display(self) -> None:
        """Timer tick: the progress, the plot (its axis follows the steps expected), the status
        and the augmentation layers, if they changed."""
        request = self._request
        timing = self.live.timing(request.config.time_limit if request is not None else None)
        if timing is not None and not self.live.training_ended:
            if self.plot.total != timing.expected:
                self.plot.total, self.plot.dirty = timing.expected, True
            self.progress.set(
                timing.fraction,
                f"step {timing.done} of {'about ' if timing.expected < self.live.step.total else ''}"
                f"{timing.expected} · {timing.per_step:.2f} s per step · "
                f"{duration(timing.elapsed)}, about {duration(timing.left)} left",
                monotonic=False,
            )
        if self.plot.dirty:
            self.plot.update()
        text = self.live.status()
        running = self.job is not None and self.job.running and not self.job.cancelled
        if text and running and text != self.status.value:  # a wrapped label relays out
            self.status.value = text
        self._show_sample()

    def _on_done(self, job: Job) -> None:
        try:
            self._finish(job)
        except RuntimeError:  # the panel is already gone (deleted, or the viewer closed)
            pass  # its timer went with it

    def _finish(self, job: Job) -> None:
        for layer in (self._labels_layer, self._image_layer):
            layer.events.data.disconnect(self._data_replaced)
        self.timer.stop()
        self._refresh_display()
        self.plot.total = max(self.plot.steps[-1:] or [self.plot.total])  # the steps done
        self.plot.update()
        self.progress.stop()
        run, request = self.run, self._request
        entry, message = kept_model(run, job)
        message = fall_back_after(job.error, self.session) or message
        if message is not None:  # the time of the steps, not of the closing segmentations
            timing = self.live.timing(None, until=self.live.last_step_at)
            if entry is not None and timing is not None:
                message += f" ({duration(timing.elapsed)}, {timing.per_step:.2f} s per step)"
            if job.cancelled and self._why_stopped:  # not a click on Stop: say what stopped it
                message += f": {self._why_stopped}"
            self.status.value = message
        self._outcome = message
        # the widget keeps the kept CPU model (in the entry) only
        self._snapshot = None
        if run is not None:
            run.snapshot = None
        if entry is not None:
            self.result_entry = entry
            if not self._closed:
                self._check_result(entry, request)
        self._set_running(False)

    def _check_result(self, entry: ModelEntry, request: FineTuneRequest) -> None:
        """Segment the trained plane with the kept model into the preview layer, and tell how
        it finds the painted cells, before and after."""
        run, outcome = self.run, self._outcome
        before = run.score_before
        layer = self._image_layer
        if layer is None or layer not in self.viewer.layers or self._replaced or outcome is None:
            return

        def scored(after: Any) -> None:
            """The run's last status (:func:`closing_status`), built from its outcome: it was
            appended to whatever the status showed by then (a save, or another run's line)."""
            if self.run is not run or self._closed:  # a newer run, or the panel closed
                return
            used = entry is self.session.current
            show_text(self.status, closing_status(outcome, before, after, used=used))

        options = dict(self.session.segment_options)
        if entry.min_confidence is not None:  # scored as Segment will segment with it
            options["min_confidence"] = entry.min_confidence
        self.preview.request(
            layer,
            (request.image, request.channel_axis),
            entry.resolve,
            entry.label,
            options=options,
            device=self.device.value,
            painted=(request.labels, request.regions),
            on_score=scored,
            place=self._run_place,
        )

    def use_for_segment(self) -> None:
        """Make the fine-tuned model the session's current model (Segment uses it)."""
        if self.result_entry is not None:
            self.session.set_current(self.result_entry)
            self.status.value = f"Segment now uses '{self.result_entry.label}'"
            self._set_running(False)

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        result = self.result_entry
        self.save_button.setEnabled(not running and result is not None)
        self.use_button.setEnabled(
            not running and result is not None and result is not self.session.current
        )

    # -- preview -------------------------------------------------------------------------------
    def refresh_preview(self) -> None:
        """Segment the image's current plane with the newest weights (the latest snapshot while
        training runs, else the session's current model) in a worker thread."""
        image_layer = self.image.value
        if self.job is not None and self.job.running and self._image_layer in self.viewer.layers:
            image_layer = self._image_layer  # the run's image, whatever the picker shows now
        if image_layer is None:
            tell_user("Preview failed: add or choose an image layer first.")
            return
        run, snapshot = self.run, self._snapshot
        if snapshot is not None and run is not None and run.net_config is not None:
            model = partial(snapshot_model, run, snapshot)
            label = f"step {snapshot.step}"
        else:
            entry = self.session.current
            model = entry.resolve
            label = entry.label
        self.preview.request(
            image_layer,
            self.image_plane(image_layer),
            model,
            label,
            options=self._preview_options(),
            device=self.device.value,
            place=self._plane_place(image_layer),
        )

    def _plane_place(self, layer: Any) -> tuple[Layout, tuple[Any, ...]]:
        """How ``layer`` is read (the chosen axes) and the full index of the plane the viewer
        shows: where a preview of that plane lies (:meth:`LivePreview.request`)."""
        layout = plan_layout(layer, axes=chosen_axes(self.axes, layer))
        return layout, plane_index(self.viewer, layer, layout.axes)

    def _preview_options(self) -> dict:
        """Segment's options, except that previews *during training* reuse the diameter that
        the score before training measured when Segment's is automatic: one network pass per
        preview instead of up to three, so the worker thread leaves the GUI thread more time
        and the previews keep up with the steps. Previews outside training are exactly
        Segment's call."""
        options = dict(self.session.segment_options)
        training = self.job is not None and self.job.running
        if training and options.get("diameter") is None and self._training_diameter is not None:
            options["diameter"] = self._training_diameter
        return options

    # -- saving --------------------------------------------------------------------------------
