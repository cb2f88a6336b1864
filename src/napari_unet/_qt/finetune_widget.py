"""The Fine-tune dock widget: adapt the current model to a few painted cells, live.

Pick an image layer, a Labels layer with a few painted cells (one id per cell) and, optionally,
a Shapes layer of *annotated regions* (inside them unpainted pixels are background, outside they
are ignored). *Start* runs :func:`~napari_unet._qt._finetune_job.finetune_job` in a worker
thread on the plane the viewer shows, starting from the session's current model; the panel shows
the weight map, the augmented tiles, a preview segmentation and the loss plot (refreshed at most
every :data:`DISPLAY_INTERVAL_MS`). *Stop* keeps the model of the last completed step, which
becomes the session's current model; *Save model…* writes it atomically. The user's layers are
never modified. See docs/architecture.md, "Fine-tune", for the whole flow.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import napari
from magicgui.widgets import ComboBox, Container, FloatSlider, FloatSpinBox, Label, SpinBox
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QVBoxLayout,
    QWidget,
)

from napari_unet._qt._annotations import (
    painted_plane,
    show_augmented_tile,
    show_weight_map,
)
from napari_unet._qt._controls import (
    ask_save_path,
    border_weight_controls,
    button_row,
    confirm_overwrite,
    count_control,
    device_combo,
    diameter_field,
    image_combo,
    leading_axis_applies,
    leading_axis_combo,
    leading_is_channels,
    regions_combo,
)
from napari_unet._qt._finetune_job import (
    FineTuneRequest,
    RunState,
    WeightMapReady,
    finetune_job,
    kept_model,
    preview_job,
    save_model_file,
    snapshot_model,
)
from napari_unet._qt._layers import (
    Layout,
    current_image_plane,
    layer_combo,
    show_segmentation,
)
from napari_unet._qt._loss_plot import LiveProgress, LossPlot
from napari_unet._qt._session import ModelEntry, session_for
from napari_unet._qt._worker import Job, LatestOnly, call_once, run_shielded, start_job, tell_user
from napari_unet.engine.events import ModelSnapshot
from napari_unet.engine.train_config import (
    DEFAULT_LR,
    FINE_TUNE_FOREGROUND_FRACTION,
    OPTIMIZERS,
    TrainConfig,
)

ROLE = "finetune"
#: the live displays (plot, status, augmentation layers) are refreshed at most this often
DISPLAY_INTERVAL_MS = 250
#: about 2 minutes on a 2-core CPU (0.11 s per step at the CPU's 192 px tiles,
#: docs/benchmarks/training_steps.md): the budget of the few-shot benchmark
DEFAULT_STEPS = 1000
#: an augmented tile is sent, and a CPU copy of the weights is taken (for the preview, and as a
#: fallback should training fail) at least, every this many steps
SAMPLE_EVERY = SNAPSHOT_EVERY = 10


class FineTuneWidget(QWidget):
    """Fine-tune the current U-Net on a few painted cells, with live feedback.

    napari injects the viewer (``napari_viewer``).

    Attributes
    ----------
    job : the running (or last) training :class:`~napari_unet._qt._worker.Job`, or ``None``.
    run : the :class:`RunState` of that job.
    result_entry : the :class:`ModelEntry` of the model this widget fine-tuned last, or ``None``.
    preview_runner : runs the preview segmentations (newest request wins).
    preview_source : what the last preview asked for segments with (``"step N"`` for a
        snapshot of the running training, else the model's label), or ``None``.
    save_job : the last *Save model…* job.
    plot : the :class:`LossPlot`.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session_for(napari_viewer)
        self.job: Job | None = None
        self.run: RunState | None = None
        self.result_entry: ModelEntry | None = None
        self.save_job: Job | None = None
        self.preview_runner = LatestOnly("Preview")
        self.preview_source: str | None = None
        self._snapshot: Any = None
        self._next_preview = 0
        self.progress = LiveProgress()
        self._labels_layer: Any = None
        self._preview_diameter: float | None = None

        self.image = image_combo(
            napari_viewer, "The image the cells were painted on (its current plane is used)."
        )
        self.leading = leading_axis_combo()
        self.labels = layer_combo(
            napari_viewer,
            napari.layers.Labels,
            label="painted cells",
            exclude_plugin_layers=True,
            tooltip="A Labels layer with a few painted cells, one id per cell (0 = not painted).",
        )
        self.regions = regions_combo(
            napari_viewer,
            "Optional: rectangles/polygons in which every cell is painted. Inside them "
            "unpainted pixels are background, outside they are ignored. Without regions the "
            "whole plane counts: unpainted pixels are background everywhere.",
        )
        self.start_model = Label(label="start from", value=self.session.current.label)
        self.steps = SpinBox(
            label="steps",
            value=DEFAULT_STEPS,
            min=1,
            max=100_000,
            tooltip="Training steps. Stop ends training early and keeps the model of that step.",
        )
        defaults = TrainConfig()
        self.optimizer = ComboBox(
            label="optimiser",
            choices=list(OPTIMIZERS),
            value=defaults.optimizer,
            tooltip="adam: quick fine-tuning; sgd: the paper's preset (momentum 0.99).",
        )
        self.lr = FloatSpinBox(
            label="learning rate", value=defaults.learning_rate, min=1e-6, max=1.0, step=1e-4
        )
        self.lr.native.setDecimals(6)
        self.w0, self.sigma = border_weight_controls(
            sliders=False, w0_label="border weight w0", sigma_label="border width σ (px)"
        )
        self.augment = FloatSlider(
            label="augmentation strength",
            value=defaults.augment_strength,
            min=0.0,
            max=2.0,
            step=0.1,
            tooltip="Scales the elastic deformation, rotations, scaling and gray values; 0 = off.",
        )
        self.diameter = diameter_field(
            "Typical cell diameter in pixels; 0 measures the painted cells. The image is "
            "rescaled to the size the model was trained at."
        )
        self.tile_size = count_control(
            "tile size (px)",
            0,
            (0, 4096),
            "Side of the network's output tile per step; 0 chooses for the device.",
        )
        self.device = device_combo()
        self.preview_every = SpinBox(
            label="preview every (steps)",
            value=50,
            min=0,
            max=100_000,
            tooltip="Segment the current plane with the newest weights every this many steps "
            "and at the end; 0 = only on 'Refresh preview'.",
        )
        self.status = Label(label="", value="")
        self.preview_info = Label(label="", value="")
        for label in (self.status, self.preview_info):
            label.native.setWordWrap(True)  # long layer names must not widen the dock
        self.form = Container(
            widgets=[
                self.image,
                self.leading,
                self.labels,
                self.regions,
                self.start_model,
                self.steps,
                self.optimizer,
                self.lr,
                self.w0,
                self.sigma,
                self.augment,
                self.diameter,
                self.tile_size,
                self.device,
                self.preview_every,
            ]
        )

        row1, (self.start_button, self.stop_button) = button_row(
            ("Start", "Fine-tune the current model on the painted cells."),
            ("Stop", "Stop after the current step and keep that model."),
        )
        row2, (self.preview_button, self.save_button) = button_row(
            ("Refresh preview", "Segment the current plane with the newest weights."),
            ("Save model…", "Write the fine-tuned model to a file (.pt)."),
        )
        self.stop_button.setEnabled(False)
        self.save_button.setEnabled(False)
        self.plot = LossPlot()

        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addLayout(row1)
        layout.addLayout(row2)
        layout.addWidget(self.plot)
        layout.addWidget(self.status.native)
        layout.addWidget(self.preview_info.native)
        layout.addStretch(1)

        self.timer = QTimer(self)
        self.timer.setInterval(DISPLAY_INTERVAL_MS)
        self.timer.timeout.connect(self._refresh_display)

        self.start_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self.preview_button.clicked.connect(self.refresh_preview)
        self.save_button.clicked.connect(self.save_model)
        self.optimizer.changed.connect(self._optimizer_changed)
        self.image.changed.connect(self._update_leading)
        self.session.changed.connect(self._session_changed)
        self._update_leading()

    # -- session -------------------------------------------------------------------------------
    def _session_changed(self, entry: ModelEntry) -> None:
        try:
            self.start_model.value = entry.label
        except RuntimeError:  # the Qt widget is already gone
            self._disconnect_session()

    def _disconnect_session(self) -> None:
        self.session.changed.disconnect(self._session_changed)

    def _optimizer_changed(self, value: str) -> None:
        self.lr.value = DEFAULT_LR[value]

    def _update_leading(self, *_: Any) -> None:
        self.leading.visible = leading_axis_applies(self.image.value)

    def image_plane(self, layer: Any) -> tuple[Any, int | None]:
        """The plane of ``layer`` the viewer shows, ``(Y, X[, C])``, and its channel axis."""
        return current_image_plane(
            self.viewer, layer, leading_is_channels=leading_is_channels(self.leading, layer)
        )

    # -- gathering the data --------------------------------------------------------------------
    def training_request(self) -> FineTuneRequest:
        """Collect the planes and settings of a run from the chosen layers.

        Raises ``ValueError`` with a sentence for the user when something is missing or does
        not fit (no layer, no painted cell on this plane, different shapes, no region drawn).
        """
        image, channel_axis, labels, regions = painted_plane(
            self.viewer,
            self.image.value,
            self.labels.value,
            self.regions.value,
            leading_is_channels=leading_is_channels(self.leading, self.image.value),
        )
        preview = max(0, int(self.preview_every.value))
        config = TrainConfig(
            steps=int(self.steps.value),
            optimizer=self.optimizer.value,
            lr=float(self.lr.value),
            w0=float(self.w0.value),
            sigma=float(self.sigma.value),
            augment_strength=float(self.augment.value),
            tile_size=int(self.tile_size.value) or None,
            foreground_fraction=FINE_TUNE_FOREGROUND_FRACTION,
            sample_every=SAMPLE_EVERY,
            snapshot_every=preview if 0 < preview <= SNAPSHOT_EVERY else SNAPSHOT_EVERY,
        )
        return FineTuneRequest(
            entry=self.session.current,
            image=image,
            channel_axis=channel_axis,
            labels=labels,
            regions=regions,
            config=config,
            device=self.device.value,
            diameter=float(self.diameter.value) or None,
            labels_name=self.labels.value.name,
        )

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
        self._labels_layer = labels_layer
        self.run = RunState(base_label=request.entry.label)
        self._snapshot = None
        self.progress = LiveProgress()
        self._next_preview = int(self.preview_every.value)
        self.plot.clear(request.config.steps)
        self.status.value = f"fine-tuning {request.entry.label} on {labels_layer.name}…"
        self._set_running(True)
        self.job = start_job(
            finetune_job,
            request,
            self.run,
            what="Fine-tuning",
            description=f"Fine-tuning on {labels_layer.name}",
            on_event=self._on_event,
            on_done=self._on_done,
        )
        self.timer.start()
        return self.job

    def stop(self) -> None:
        """Stop training after the step in progress; the model of that step is kept."""
        if self.job is not None and self.job.running:
            self.job.cancel()
            self.stop_button.setEnabled(False)
            self.status.value = "stopping after the current step…"

    def _on_event(self, event: Any) -> None:
        if self.progress.record(event, self.plot):
            return
        match event:
            case ModelSnapshot():
                self._on_snapshot(event)
            case WeightMapReady():
                layer = self._labels_layer
                if layer is not None and layer in self.viewer.layers:
                    show_weight_map(self.viewer, layer, event.weight_map, role=ROLE)

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
        """Timer tick: repaint the plot, the status and the augmentation layers if they changed."""
        if self.plot.dirty:
            self.plot.update()
        text = self.progress.status()
        if text and self.job is not None and self.job.running and not self.job.cancelled:
            self.status.value = text
        sample = self.progress.take_sample()
        if sample is not None:
            self._show_sample(sample)

    def _show_sample(self, sample: Any) -> None:
        layer = self._labels_layer
        if layer is not None and layer in self.viewer.layers:
            show_augmented_tile(self.viewer, layer, sample, role=ROLE)

    def _on_done(self, job: Job) -> None:
        self.timer.stop()
        self._refresh_display()
        self.plot.update()
        run = self.run
        entry, message = kept_model(run, job)
        if message is not None:
            self.status.value = message
        kept = entry is not None
        if kept:
            self.result_entry = entry
            self._preview_diameter = run.scale.input_diameter
            self.session.set_current(entry)
        # the widget keeps the kept CPU model (in the entry) only
        self._snapshot = None
        if run is not None:
            run.snapshot = None
        self._set_running(False)
        if kept and int(self.preview_every.value) > 0:
            self.refresh_preview()

    def _set_running(self, running: bool) -> None:
        self.start_button.setEnabled(not running)
        self.stop_button.setEnabled(running)
        self.save_button.setEnabled(not running and self.result_entry is not None)

    # -- preview -------------------------------------------------------------------------------
    def refresh_preview(self) -> None:
        """Segment the image's current plane with the newest weights (the latest snapshot while
        training runs, else the session's current model) in a worker thread."""
        image_layer = self.image.value
        if image_layer is None:
            tell_user("Preview failed: add or choose an image layer first.")
            return
        image, channel_axis = self.image_plane(image_layer)
        run, snapshot = self.run, self._snapshot
        if snapshot is not None and run is not None and run.net_config is not None:
            model = partial(snapshot_model, run, snapshot)
            diameter = run.scale.input_diameter
            label = f"step {snapshot.step}"
        else:
            entry = self.session.current
            model = entry.resolve
            diameter = (
                self._preview_diameter
                if entry is self.result_entry
                else float(self.diameter.value) or None
            )
            label = entry.label
        self.preview_source = label
        layout = Layout(tuple(image.shape), channel_axis, ())
        self.preview_runner.submit(
            run_shielded,
            preview_job,
            image,
            channel_axis,
            model,
            diameter=diameter,
            device=self.device.value,
            on_result=lambda result: self._show_preview(image_layer, layout, result, label),
        )

    def _show_preview(self, image_layer: Any, layout: Layout, result: Any, label: str) -> None:
        if image_layer not in self.viewer.layers:
            return
        show_segmentation(
            self.viewer,
            image_layer,
            layout,
            result,
            name=f"{image_layer.name} preview",
            key_prefix=ROLE,
        )
        n_cells = int(result.labels.max()) if result.labels.size else 0
        self.preview_info.value = f"preview ({label}): {n_cells} cells"

    # -- saving --------------------------------------------------------------------------------
    def ask_save_path(self) -> str:
        """Ask where to save the model; ``""`` when cancelled (:meth:`save_model` asks about an
        existing file itself, for every way a path can come in)."""
        return ask_save_path(self, "Save the fine-tuned model", "fine-tuned.pt", "U-Net model (*.pt)")

    def confirm_overwrite(self, path: Path) -> bool:
        """Ask whether to replace the existing file ``path``; ``True`` means yes."""
        return confirm_overwrite(self, path)

    def save_model(self) -> Job | None:
        """Write the last fine-tuned model to a file the user picks (atomic write, in a worker
        thread); an existing file is replaced only after the user confirmed. Returns the job, or
        ``None`` when nothing is written."""
        if self.job is not None and self.job.running:
            tell_user("Saving the model failed: stop the training first (the last step is kept).")
            return None
        entry = self.result_entry
        if entry is None:
            tell_user("Saving the model failed: fine-tune a model first.")
            return None
        chosen = self.ask_save_path()
        if not chosen:
            return None
        path = Path(chosen).expanduser()
        if path.suffix.lower() != ".pt":
            path = path.with_name(path.name + ".pt")
        if path.is_dir():
            tell_user(f"Saving the model failed: {path} is a folder.")
            return None
        if path.exists() and not self.confirm_overwrite(path):
            self.status.value = f"not saved: {path.name} exists"
            return None
        self.status.value = f"saving {path.name}…"
        self.save_job = start_job(
            call_once,
            run_shielded,
            save_model_file,
            path,
            entry,
            what="Saving the model",
            show_progress=False,
            on_result=lambda written: setattr(self.status, "value", f"saved {written}"),
        )
        return self.save_job
