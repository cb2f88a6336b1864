"""The Fine-tune dock widget: adapt the current model to a few painted cells, live.

Pick an image layer, a Labels layer with a few painted cells (one id per cell) and, optionally,
a Shapes layer of *annotated regions* (inside them unpainted pixels are background, outside they
are ignored; without regions the whole plane counts as annotated, so unpainted pixels are
background everywhere). Training uses the plane the viewer shows (or the whole 2D image) and
starts from the session's current model: the bundled default, a model file, or an earlier
fine-tune.

*Start* runs :func:`napari_unet.engine.training.iter_train` in a worker thread (a napari progress
bar follows the steps). While it runs the widget shows, in plugin-owned layers (the user's layers
are never modified):

* the weight map of the annotations (total, ``w_c`` and border term, eq. 2 of the paper);
* the augmented tile the network just trained on (image and labels), beside the labels;
* a preview segmentation of the current plane with the newest weights (*Refresh preview*, and
  automatically every few steps), computed in a second worker while training goes on;

and a light loss plot (training loss per step, validation loss when it is measured), repainted
at most every :data:`DISPLAY_INTERVAL_MS`.

*Stop* ends training after the step in progress; the model of the last completed step is kept.
After *Stop* or the last step the fine-tuned model becomes the session's current model, so the
Segment widget uses it; *Save model…* writes it with the engine's atomic ``save_checkpoint``.
The widget keeps CPU copies of the weights only (the engine moves the model back to the CPU and
releases device memory when training ends).
"""

from __future__ import annotations

import bisect
import copy
import logging
import math
import traceback
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSlider, FloatSpinBox, Label, SpinBox
from qtpy.QtCore import QPointF, QRectF, Qt, QTimer
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_unet._qt._layers import (
    Layout,
    current_image_plane,
    current_plane_index,
    layer_combo,
    plane_of,
    put_layer,
    regions_mask,
    show_weight_map,
    side_by_side_geometry,
)
from napari_unet._qt._session import ModelEntry, session_for
from napari_unet.engine.events import (
    AugmentationSample,
    ModelSnapshot,
    StepDone,
    ValidationDone,
    relay,
)
from napari_unet._qt._worker import (
    Job,
    LatestOnly,
    call_once,
    run_shielded,
    shield_runtime_error,
    start_job,
    tell_user,
)
from napari_unet._qt.segment_widget import (
    DEVICES,
    LEADING_CHANNELS,
    leading_axis_applies,
    leading_axis_combo,
    show_segmentation,
)

logger = logging.getLogger(__name__)

ROLE = "finetune"
#: the live displays (plot, status, augmentation layers) are refreshed at most this often
DISPLAY_INTERVAL_MS = 250
#: about 2 minutes on a 2-core CPU (0.11 s per step at the CPU's 192 px tiles,
#: docs/benchmarks/training_steps.md): the budget of the few-shot benchmark
DEFAULT_STEPS = 1000
#: an augmented tile is sent every this many steps
SAMPLE_EVERY = 10
#: a CPU copy of the weights is taken at least every this many steps (for the preview and as a
#: fallback should training fail)
SNAPSHOT_EVERY = 10
#: the learning rate each optimiser preset starts with (mirrors the engine's presets)
PRESET_LR = {"adam": 1e-3, "sgd": 1e-2}


# -- worker-thread side ----------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class WeightMapReady:
    """Event of the fine-tune job: the :class:`~napari_unet.engine.weights.WeightMap` of the
    annotations, float32 (Y, X) parts at the labels' own scale."""

    weight_map: Any


@dataclass(eq=False)
class FineTuneRequest:
    """Everything one fine-tuning run needs, gathered on the GUI thread.

    Attributes
    ----------
    entry : the model to start from (the session's current model).
    image : the image plane, (Y, X) or (Y, X, C); may be lazy, it is read in the worker.
    channel_axis : ``-1`` for an RGB(A) image, ``None`` for grayscale.
    labels : (Y, X) integer copy of the painted cells (0 = not painted).
    regions : (Y, X) bool, True inside the annotated regions, or ``None`` (all annotated).
    config : the :class:`~napari_unet.engine.training.TrainConfig` to train with.
    device : ``"auto"``, ``"cuda"``, ``"mps"`` or ``"cpu"``.
    diameter : the cells' diameter in image pixels, or ``None`` to measure the painted cells.
    labels_name : the Labels layer's name (recorded in the model's metadata).
    """

    entry: ModelEntry
    image: Any
    channel_axis: int | None
    labels: np.ndarray
    regions: np.ndarray | None
    config: Any
    device: str
    diameter: float | None
    labels_name: str = ""


@dataclass(eq=False)
class RunState:
    """What the training worker shares with the GUI thread for one run.

    The worker fills it in; the GUI thread reads it in the job's ``on_done`` (after the worker
    has finished) and, for the preview, reads ``net_config``/``normalization``/``extra``, which
    are set before the first event is yielded.

    Attributes
    ----------
    base_label : the label of the model training started from.
    net_config : the network's ``UNetConfig``.
    normalization, extra : the checkpoint metadata the fine-tuned model gets.
    scale : how the plane was brought to the model's diameter
        (:class:`~napari_unet.engine.diameter.TrainingScale`); its ``input_diameter`` is what
        previews segment this image with, so that it is rescaled exactly as for training.
    steps_done : the last completed step.
    history : ``{"step", "loss", "lr", "seconds"}`` and ``{"step", "validation"}`` records.
    snapshot : the newest ``ModelSnapshot`` (CPU weights).
    final : ``(UNet, Checkpoint)`` on the CPU once the run is over and left a model, else ``None``.
    final_step : the step ``final`` holds.
    failed : whether the run ended with an error (``final`` then comes from ``snapshot``).
    """

    base_label: str
    net_config: Any = None
    normalization: dict | None = None
    extra: dict = field(default_factory=dict)
    scale: Any = None
    steps_done: int = 0
    history: list[dict] = field(default_factory=list)
    snapshot: Any = None
    final: tuple | None = None
    final_step: int = 0
    failed: bool = False
    config: Any = None


def _checkpoint_for(run: RunState, step: int) -> Any:
    """The metadata of the model of ``step``."""
    from napari_unet.engine.checkpoint import Checkpoint

    training = {**run.config.to_dict(), "steps_done": step, "fine_tuned_from": run.base_label}
    history = [h for h in run.history if h["step"] <= step]
    return Checkpoint(
        config=run.net_config,
        normalization=dict(run.normalization or {}),
        training=training,
        history=history,
        extra=dict(run.extra),
        diameter=run.scale.diameter,
    )


def finetune_job(request: FineTuneRequest, run: RunState):
    """Worker-thread generator: fine-tune a copy of the request's model on its painted cells.

    Yields :class:`WeightMapReady` first, then the engine's training events. Whatever happens
    (end, Stop, error) the run leaves the kept model in ``run.final`` (CPU): the trained network
    after the end or a Stop (the last completed step), or the last snapshot after an error.
    Returns the engine's ``TrainResult``; a ``RuntimeError`` (e.g. out of memory) comes out as a
    :class:`JobRuntimeError`.
    """
    try:
        return (yield from _finetune(request, run))
    except RuntimeError as exc:
        raise shield_runtime_error(exc) from exc


def _finetune(request: FineTuneRequest, run: RunState):
    """The body of :func:`finetune_job`."""
    from napari_unet.engine.models import load_model
    from napari_unet.engine.diameter import match_training_diameter
    from napari_unet.engine.training import iter_train
    from napari_unet.engine.weights import training_targets

    base, checkpoint = load_model(request.entry.resolve(), device="cpu")
    net = copy.deepcopy(base)  # never train the session's model object in place
    del base
    labels = np.asarray(request.labels)
    regions = request.regions
    config = request.config
    run.config = config
    run.net_config = net.config
    run.normalization = dict(checkpoint.normalization) if checkpoint.normalization else None

    _, _, shown = training_targets(
        labels, regions, w0=config.w0, sigma=config.sigma, n_classes=int(net.config.n_classes)
    )
    yield WeightMapReady(shown)

    (image,), (labels,), (regions,), scale = match_training_diameter(
        [np.asarray(request.image)],
        [labels],
        [regions],
        model_diameter=checkpoint.diameter,
        diameter=request.diameter,
    )
    run.scale = scale
    run.extra = {
        **checkpoint.extra,
        "fine_tuned_from": request.entry.label,
        "fine_tuned_on": request.labels_name,
    }

    def record(event: Any) -> Any:
        match event:
            case StepDone():
                run.steps_done = event.step
                run.history.append(
                    {
                        "step": event.step,
                        "loss": event.loss,
                        "lr": event.lr,
                        "seconds": event.seconds,
                    }
                )
            case ValidationDone():
                run.history.append({"step": event.step, "validation": dict(event.metrics)})
            case ModelSnapshot():
                run.snapshot = event
        return event

    gen = iter_train(
        net,
        image,
        labels,
        regions=regions,
        channel_axis=request.channel_axis,
        config=config,
        device=request.device,
        normalization=run.normalization,
        extra=run.extra,
        diameter=scale.diameter,
    )
    try:
        # relay closes gen after Stop: the engine's cleanup runs (model to the CPU, memory freed)
        return (yield from relay(gen, record))
    except GeneratorExit:
        raise
    except BaseException as exc:
        run.failed = True
        # the traceback's frames hold the step's device tensors: drop them so that keeping
        # the error (for the notification) keeps no device memory
        traceback.clear_frames(exc.__traceback__)
        raise
    finally:
        _keep_model(run, net)


def _keep_model(run: RunState, net: Any) -> None:
    """Put the model this run leaves into ``run.final`` (see :func:`finetune_job`)."""
    try:
        if not run.failed and run.steps_done > 0:
            net.to("cpu").eval()
            run.final, run.final_step = (net, _checkpoint_for(run, run.steps_done)), run.steps_done
        elif run.failed and run.snapshot is not None:
            kept = snapshot_model(run, run.snapshot)
            run.final, run.final_step = kept, run.snapshot.step
    except Exception:  # never hide the run's own outcome behind a packaging problem
        logger.exception("could not keep the fine-tuned model")


def snapshot_model(run: RunState, snapshot: Any) -> tuple[Any, Any]:
    """A new CPU ``(UNet, Checkpoint)`` built from a ``ModelSnapshot`` of ``run``."""
    from napari_unet.engine.model import UNet

    net = UNet(run.net_config)
    net.load_state_dict(snapshot.state_dict)
    net.eval()
    return net, _checkpoint_for(run, snapshot.step)


def preview_job(image: Any, channel_axis: int | None, model: Any, *, diameter, device) -> Any:
    """Worker thread: segment one (Y, X[, C]) plane with ``model`` (a zero-argument callable
    returning what ``load_model`` accepts); returns the ``SegmentResult``. A shared network is
    copied first, so a preview never moves the session's model to a device."""
    import torch

    from napari_unet.engine.models import load_model
    from napari_unet.engine.segment import iter_segment
    from napari_unet.engine.events import drive

    source = model()
    if isinstance(source, (tuple, torch.nn.Module)):
        net, checkpoint = load_model(source)
        source = (copy.deepcopy(net), checkpoint)
    return drive(
        iter_segment(
            np.asarray(image),
            source,
            channel_axis=channel_axis,
            diameter=diameter,
            device=device,
        )
    )


# -- the loss plot -----------------------------------------------------------------------------
class LossPlot(QWidget):
    """Training loss per step (grey), its running average (blue) and validation losses (orange
    dots), drawn with QPainter. Adding points only stores them; the owner repaints
    (``update()``) on a timer, so a fast training loop cannot flood the GUI.

    Points may arrive out of order (napari's progress bar processes pending events while it
    updates, so one event's handler can run inside another's); they are kept sorted by step.

    Attributes
    ----------
    steps, losses : the training steps (sorted) and their losses (weighted cross-entropy,
        unitless).
    val_steps, val_losses : the steps validation ran after (sorted), and its loss.
    total : the number of steps the run will take (the x axis' length).
    dirty : whether points were added since the last paint.
    """

    #: weight of the previous value in the running average
    SMOOTHING = 0.9
    #: at most this many points are drawn per curve
    MAX_POINTS = 1000

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.val_steps: list[int] = []
        self.val_losses: list[float] = []
        self.total = 0
        self.dirty = False
        self.setFixedHeight(140)
        self.setToolTip("Loss per step (grey), its running average (blue), validation (orange).")

    def clear(self, total: int) -> None:
        """Forget every point; the next run takes ``total`` steps."""
        for values in (self.steps, self.losses, self.val_steps, self.val_losses):
            values.clear()
        self.total = int(total)
        self.dirty = True

    @staticmethod
    def _insert(steps: list[int], values: list[float], step: int, value: float) -> None:
        at = bisect.bisect_right(steps, step)
        steps.insert(at, int(step))
        values.insert(at, float(value))

    def add_loss(self, step: int, loss: float) -> None:
        """Store the training loss of ``step``."""
        if math.isfinite(loss):
            self._insert(self.steps, self.losses, step, loss)
            self.dirty = True

    def add_validation(self, step: int, loss: float) -> None:
        """Store the validation loss measured after ``step``."""
        if math.isfinite(loss):
            self._insert(self.val_steps, self.val_losses, step, loss)
            self.dirty = True

    def smoothed(self) -> np.ndarray:
        """The running average of the losses (float64, one per stored step)."""
        out = np.empty(len(self.losses))
        average = self.losses[0] if self.losses else 0.0
        for i, value in enumerate(self.losses):
            average = self.SMOOTHING * average + (1 - self.SMOOTHING) * value
            out[i] = average
        return out

    def paintEvent(self, _event: Any) -> None:
        self.dirty = False
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        text = self.palette().windowText().color()
        area = QRectF(self.rect()).adjusted(40, 8, -8, -20)
        painter.setPen(QPen(text, 1))
        painter.drawRect(area)
        if not self.losses:
            painter.drawText(area, Qt.AlignmentFlag.AlignCenter, "loss per step")
            painter.end()
            return
        steps = np.asarray(self.steps, dtype=float)
        losses = np.asarray(self.losses)
        smoothed = self.smoothed()
        x_max = max(self.total, int(steps[-1]), 2)
        # a robust top, so that one spike does not flatten the curve
        tops = [float(np.percentile(losses, 98)), float(smoothed.max()), *self.val_losses]
        y_max = max(max(tops) * 1.1, 1e-6)

        def points(xs: np.ndarray, ys: np.ndarray) -> list[QPointF]:
            px = area.left() + area.width() * (xs - 1) / max(x_max - 1, 1)
            py = area.bottom() - area.height() * np.minimum(ys, y_max) / y_max
            return [QPointF(float(x), float(y)) for x, y in zip(px, py, strict=True)]

        stride = max(1, len(steps) // self.MAX_POINTS)
        painter.setClipRect(area)
        painter.setPen(QPen(QColor(150, 150, 150), 1))
        painter.drawPolyline(QPolygonF(points(steps[::stride], losses[::stride])))
        painter.setPen(QPen(QColor(60, 140, 230), 2))
        painter.drawPolyline(QPolygonF(points(steps[::stride], smoothed[::stride])))
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor(240, 150, 40))
        val = points(np.asarray(self.val_steps, dtype=float), np.asarray(self.val_losses))
        for point in val:
            painter.drawEllipse(point, 3.5, 3.5)
        painter.setClipping(False)
        painter.setPen(QPen(text, 1))
        painter.drawText(QPointF(2, area.top() + 10), f"{y_max:.2g}")
        painter.drawText(QPointF(2, area.bottom()), "0")
        painter.drawText(QPointF(area.left(), area.bottom() + 15), "1")
        label = f"step {x_max}"
        width = painter.fontMetrics().horizontalAdvance(label)
        painter.drawText(QPointF(area.right() - width, area.bottom() + 15), label)
        painter.end()


# -- the widget ------------------------------------------------------------------------------
class FineTuneWidget(QWidget):
    """Fine-tune the current U-Net on a few painted cells, with live feedback.

    Parameters
    ----------
    napari_viewer : the viewer (napari injects it).

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
        self._pending_sample: Any = None
        self._last_step: Any = None
        self._last_validation: dict | None = None
        self._labels_layer: Any = None
        self._preview_diameter: float | None = None

        self.image = layer_combo(
            napari_viewer,
            napari.layers.Image,
            label="image",
            exclude_plugin_layers=True,
            tooltip="The image the cells were painted on (its current plane is used).",
        )
        self.leading = leading_axis_combo()
        self.labels = layer_combo(
            napari_viewer,
            napari.layers.Labels,
            label="painted cells",
            exclude_plugin_layers=True,
            tooltip="A Labels layer with a few painted cells, one id per cell (0 = not painted).",
        )
        self.regions = layer_combo(
            napari_viewer,
            napari.layers.Shapes,
            label="annotated regions",
            nullable=True,
            exclude_plugin_layers=True,
            tooltip="Optional: rectangles/polygons in which every cell is painted. Inside them "
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
        self.optimizer = ComboBox(
            label="optimiser",
            choices=list(PRESET_LR),
            value="adam",
            tooltip="adam: quick fine-tuning; sgd: the paper's preset (momentum 0.99).",
        )
        self.lr = FloatSpinBox(label="learning rate", value=1e-3, min=1e-6, max=1.0, step=1e-4)
        self.lr.native.setDecimals(6)
        self.w0 = FloatSpinBox(
            label="border weight w0",
            value=10.0,
            min=0.0,
            max=100.0,
            step=1.0,
            tooltip="Extra weight on the gaps between touching cells (eq. 2 of the paper).",
        )
        self.sigma = FloatSpinBox(
            label="border width σ (px)",
            value=5.0,
            min=0.5,
            max=100.0,
            step=0.5,
            tooltip="How far from the gaps between cells the border weight reaches, in pixels.",
        )
        self.augment = FloatSlider(
            label="augmentation strength",
            value=1.0,
            min=0.0,
            max=2.0,
            step=0.1,
            tooltip="Scales the elastic deformation, rotations, scaling and gray values; 0 = off.",
        )
        self.diameter = FloatSpinBox(
            label="cell diameter (px)",
            value=0.0,
            min=0.0,
            max=2000.0,
            step=1.0,
            tooltip="Typical cell diameter in pixels; 0 measures the painted cells. The image is "
            "rescaled to the size the model was trained at.",
        )
        self.tile_size = SpinBox(
            label="tile size (px)",
            value=0,
            min=0,
            max=4096,
            tooltip="Side of the network's output tile per step; 0 chooses for the device.",
        )
        self.device = ComboBox(label="device", choices=list(DEVICES), value="auto")
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

        self.start_button = QPushButton("Start")
        self.start_button.setToolTip("Fine-tune the current model on the painted cells.")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop after the current step and keep that model.")
        self.stop_button.setEnabled(False)
        self.preview_button = QPushButton("Refresh preview")
        self.preview_button.setToolTip("Segment the current plane with the newest weights.")
        self.save_button = QPushButton("Save model…")
        self.save_button.setToolTip("Write the fine-tuned model to a file (.pt).")
        self.save_button.setEnabled(False)
        row1 = QHBoxLayout()
        row1.addWidget(self.start_button)
        row1.addWidget(self.stop_button)
        row2 = QHBoxLayout()
        row2.addWidget(self.preview_button)
        row2.addWidget(self.save_button)
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
        self.lr.value = PRESET_LR[value]

    def _update_leading(self, *_: Any) -> None:
        self.leading.visible = leading_axis_applies(self.image.value)

    def image_plane(self, layer: Any) -> tuple[Any, int | None]:
        """The plane of ``layer`` the viewer shows, ``(Y, X[, C])``, and its channel axis."""
        channels = leading_axis_applies(layer) and self.leading.value == LEADING_CHANNELS
        return current_image_plane(self.viewer, layer, leading_is_channels=channels)

    # -- gathering the data --------------------------------------------------------------------
    def training_request(self) -> FineTuneRequest:
        """Collect the planes and settings of a run from the chosen layers.

        Raises ``ValueError`` with a sentence for the user when something is missing or does
        not fit (no layer, no painted cell on this plane, different shapes, no region drawn).
        """
        from napari_unet.engine.training import FINE_TUNE_FOREGROUND_FRACTION, TrainConfig

        image_layer, labels_layer = self.image.value, self.labels.value
        if image_layer is None:
            raise ValueError("add or choose an image layer first")
        if labels_layer is None:
            raise ValueError("add a Labels layer and paint a few cells in it first")
        label_plane = current_plane_index(self.viewer, labels_layer)
        labels = np.array(plane_of(labels_layer, label_plane))  # a copy: painting may go on
        where = f" on plane {label_plane}" if label_plane else ""
        if labels.ndim != 2:
            raise ValueError(f"the labels '{labels_layer.name}' are not a 2D plane{where}")
        image, channel_axis = self.image_plane(image_layer)
        spatial = tuple(image.shape[:2] if channel_axis is not None else image.shape)
        if len(spatial) != 2 or image.ndim > 3:
            raise ValueError(
                f"the image '{image_layer.name}' has a plane of shape {tuple(image.shape)}; "
                "expected a 2D plane, with or without channels"
            )
        if spatial != labels.shape:
            raise ValueError(
                f"the image '{image_layer.name}' {spatial} and the labels '{labels_layer.name}' "
                f"{labels.shape} have different shapes"
            )
        if not labels.any():
            raise ValueError(
                f"no painted cells in '{labels_layer.name}'{where}; paint a few cells (one id "
                "per cell) first"
            )
        regions = None
        shapes_layer = self.regions.value
        if shapes_layer is not None:
            regions = regions_mask(shapes_layer, labels_layer, label_plane, labels.shape)
            if regions is None:
                raise ValueError(
                    f"the regions layer '{shapes_layer.name}' has no shape on this plane; draw "
                    "rectangles or polygons around fully painted areas, or choose (none)"
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
            labels_name=labels_layer.name,
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
        self._pending_sample = None
        self._last_step = None
        self._last_validation = None
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
        # handlers can be re-entered (napari's progress bar processes events), so events may
        # come out of order: keep the newest by step
        match event:
            case StepDone():
                self.plot.add_loss(event.step, event.loss)
                if self._last_step is None or event.step > self._last_step.step:
                    self._last_step = event
            case ValidationDone():
                self._last_validation = dict(event.metrics)
                if "loss" in event.metrics:
                    self.plot.add_validation(event.step, event.metrics["loss"])
            case AugmentationSample():
                if self._pending_sample is None or event.step > self._pending_sample.step:
                    self._pending_sample = event
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
        step = self._last_step
        if (
            step is not None
            and self.job is not None
            and self.job.running
            and not self.job.cancelled
        ):
            text = f"step {step.step}/{step.total}: loss {step.loss:.3f}"
            if self._last_validation:
                text += ", validation " + ", ".join(
                    f"{k} {v:.3f}" for k, v in self._last_validation.items()
                )
            self.status.value = text
        sample, self._pending_sample = self._pending_sample, None
        if sample is not None:
            self._show_sample(sample)

    def _show_sample(self, sample: Any) -> None:
        """Show an ``AugmentationSample`` (normalised image, deformed labels) beside the labels."""
        layer = self._labels_layer
        if layer is None or layer not in self.viewer.layers:
            return
        geometry = side_by_side_geometry(layer)
        image = np.asarray(sample.image, dtype=np.float32)
        rgb = False
        if image.ndim == 3:
            if image.shape[0] in (3, 4):
                image, rgb = np.clip(np.moveaxis(image, 0, -1), 0.0, 1.0), True
            else:
                image = image.mean(axis=0)
        put_layer(
            self.viewer,
            image,
            kind="image",
            name="augmented tile",
            key=f"{ROLE}:augmented:image",
            role=ROLE,
            geometry=geometry,
            rgb=rgb,
        )
        put_layer(
            self.viewer,
            np.asarray(sample.labels),
            kind="labels",
            name="augmented tile labels",
            key=f"{ROLE}:augmented:labels",
            role=ROLE,
            geometry=geometry,
        )

    def _on_done(self, job: Job) -> None:
        self.timer.stop()
        self._refresh_display()
        self.plot.update()
        run = self.run
        kept = run is not None and run.final is not None
        if kept:
            net, checkpoint = run.final
            what = "stopped" if job.cancelled else ("failed" if run.failed else "done")
            entry = ModelEntry(
                f"fine-tuned on {run.extra.get('fine_tuned_on') or 'painted cells'} "
                f"(step {run.final_step})",
                (net, checkpoint),
                kind="fine-tuned",
                normalization=checkpoint.normalization,
                step=run.final_step,
            )
            self.result_entry = entry
            self._preview_diameter = run.scale.input_diameter
            self.session.set_current(entry)
            if what == "failed":
                self.status.value = (
                    f"failed at step {run.steps_done + 1} (see the notification); kept the "
                    f"model of step {run.final_step}, now the current model"
                )
            else:
                self.status.value = (
                    f"{what} after step {run.final_step}: the fine-tuned model is now the "
                    "current model (Segment uses it)"
                )
        elif job.cancelled:
            self.status.value = "stopped before the first step; the model is unchanged"
        elif job.error is not None:
            self.status.value = "failed (see the notification); the model is unchanged"
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
        """Ask where to save the model (a Qt file dialog); ``""`` when cancelled.

        The dialog does not ask about existing files itself: :meth:`save_model` does, in one
        place, for every way a path can come in.
        """
        start = str(Path.home() / "fine-tuned.pt")
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Save the fine-tuned model",
            start,
            "U-Net model (*.pt)",
            options=QFileDialog.Option.DontConfirmOverwrite,
        )
        return path

    def confirm_overwrite(self, path: Path) -> bool:
        """Ask whether to replace the existing file ``path``; ``True`` means yes."""
        answer = QMessageBox.question(
            self,
            "Replace the model file?",
            f"{path.name} already exists in {path.parent}. Replace it?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        return answer == QMessageBox.StandardButton.Yes

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
        from napari_unet.engine.checkpoint import save_checkpoint

        net, checkpoint = entry.source
        self.status.value = f"saving {path.name}…"
        self.save_job = start_job(
            call_once,
            run_shielded,
            save_checkpoint,
            path,
            net,
            normalization=checkpoint.normalization,
            training=checkpoint.training,
            history=checkpoint.history,
            extra=checkpoint.extra,
            what="Saving the model",
            show_progress=False,
            on_result=lambda written: setattr(self.status, "value", f"saved {written}"),
        )
        return self.save_job
