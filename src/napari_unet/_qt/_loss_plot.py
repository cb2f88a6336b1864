"""The Fine-tune panel's live view of a run: the loss plot (QPainter) and the newest step,
validation and augmented tile, kept for the display timer."""

from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QWidget

from napari_unet.engine.events import AugmentationSample, StepDone, ValidationDone


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


class LiveProgress:
    """The newest training step, validation and augmented tile of a run, for the display timer.

    Event handlers can be re-entered (napari's progress bar processes events while it
    updates), so events may come out of order: the newest by step is kept.
    """

    def __init__(self) -> None:
        self.step: Any = None
        self.validation: dict | None = None
        self.sample: Any = None
        self.training_started: float | None = None
        #: ``time.perf_counter()`` when the newest step arrived: the end of the training proper
        self.last_step_at: float | None = None
        #: the steps are over; the run's closing work goes on
        self.training_ended = False

    def record(self, event: Any, plot: LossPlot) -> bool:
        """Keep ``event`` if it is a step, a validation or a tile (adding losses to ``plot``);
        return whether it was one of those."""
        match event:
            case StepDone():
                if self.training_started is None:  # the first step began this long ago
                    self.training_started = time.perf_counter() - event.seconds
                plot.add_loss(event.step, event.loss)
                if self.step is None or event.step > self.step.step:
                    self.step = event
                    self.last_step_at = time.perf_counter()
            case ValidationDone():
                self.validation = dict(event.metrics)
                if "loss" in event.metrics:
                    plot.add_validation(event.step, event.metrics["loss"])
            case AugmentationSample():
                if self.sample is None or event.step > self.sample.step:
                    self.sample = event
            case _:
                return False
        return True

    def status(self) -> str:
        """``"loss 0.512 (held-out cells: 0.498)"``, or ``""`` before a step."""
        if self.step is None:
            return ""
        text = f"loss {self.step.loss:.3f}"
        if self.validation and "loss" in self.validation:
            text += f" (held-out cells: {self.validation['loss']:.3f})"
        return text

    def timing(self, time_limit: float | None, *, until: float | None = None) -> Timing | None:
        """How fast the run goes and how long it still needs (``None`` before a step), measured
        now or ``until`` (a ``time.perf_counter()``; :attr:`last_step_at`: the training's own
        time, without the work after its last step)."""
        if self.step is None or self.training_started is None:
            return None
        done, steps = self.step.step, self.step.total
        elapsed = (time.perf_counter() if until is None else until) - self.training_started
        per_step = elapsed / done
        left = (steps - done) * per_step
        if time_limit is not None:
            left = min(left, max(time_limit - elapsed, 0.0))
        expected = min(steps, done + math.ceil(left / per_step)) if per_step > 0 else steps
        return Timing(done, max(expected, done), per_step, elapsed, left)

    def take_sample(self) -> Any:
        """The newest augmented tile not yet shown (``None`` if none), now counted as shown."""
        sample, self.sample = self.sample, None
        return sample


@dataclass(frozen=True)
class Timing:
    """Where a run stands: steps done, steps expected in all (from the steps asked for, the time
    budget and the measured seconds per step), seconds per step, seconds so far and left."""

    done: int
    expected: int
    per_step: float
    elapsed: float
    left: float

    @property
    def fraction(self) -> float:
        """The part of the run done, 0 to 1."""
        return self.done / self.expected if self.expected else 0.0
