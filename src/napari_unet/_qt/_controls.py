"""Controls that several panels share, declared once: their ranges and defaults come from the
engine (:class:`~napari_unet.engine.train_config.TrainConfig`,
:data:`~napari_unet.engine.device.DEVICE_CHOICES`), so a panel never restates one."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import napari
from magicgui.widgets import ComboBox, FloatSlider, FloatSpinBox, Label, SpinBox
from qtpy.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QMessageBox,
    QPushButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from napari_unet._qt._layers import detected_axes, layer_array, layer_combo
from napari_unet.engine.device import DEVICE_CHOICES
from napari_unet.engine.train_config import TrainConfig

#: the border weight w0 (unitless) and its width sigma (pixels) a user may choose
W0_RANGE = (0.0, 100.0)
SIGMA_RANGE = (0.5, 50.0)


def image_combo(viewer: Any, tooltip: str, *, nullable: bool = False) -> ComboBox:
    """The choice of a user's Image layer (the plugin's own layers are left out)."""
    return _user_layers(viewer, napari.layers.Image, "image", tooltip, nullable)


def regions_combo(viewer: Any, tooltip: str) -> ComboBox:
    """The optional choice of a Shapes layer of annotated regions."""
    return _user_layers(viewer, napari.layers.Shapes, "annotated regions", tooltip, True)


def _user_layers(viewer: Any, kind: type, label: str, tooltip: str, nullable: bool) -> ComboBox:
    return layer_combo(
        viewer, kind, label=label, nullable=nullable, exclude_plugin_layers=True, tooltip=tooltip
    )


AXES_TOOLTIP = (
    "One letter per axis of the image: Y rows, X columns, C channels, Z / T planes (slices, "
    "time points), segmented one by one. The detected order comes first."
)


def axes_combo() -> ComboBox:
    """The choice of an image's axes (``ZYX``, ``YXC``, ``YXZ``, ...), the detected one first
    (see :func:`update_axes`)."""
    return ComboBox(
        label="axes",
        choices=["YX"],
        value="YX",
        tooltip=AXES_TOOLTIP,
    )


def update_axes(combo: ComboBox, layer: Any, *, keep_choice: bool = False) -> None:
    """Offer the axes orders that fit ``layer`` (the detected one selected); the choice is
    shown only where there is one to make (grayscale, 3 or more axes). ``keep_choice``: an
    order the user chose (not the detected one) that still fits stays selected."""
    from napari_unet.engine.axes import axes_choices

    if layer is None:
        combo.visible = False
        return
    shape = tuple(layer_array(layer).shape)
    rgb = bool(getattr(layer, "rgb", False))
    try:
        detected, guess = detected_axes(layer)
    except ValueError:  # no reading fits (6 or more axes): a click says so (plan_layout)
        combo.visible = False
        return
    choices = [detected] if rgb else axes_choices(shape, detected)
    _offer(combo, choices, len(shape) >= 3 and not rgb, keep_choice)
    try:
        combo.tooltip = AXES_TOOLTIP + (f"\n\nThis layer's {guess}." if guess else "")
    except RuntimeError:  # the Qt widget is already gone (viewer closing)
        pass


def _offer(combo: ComboBox, choices: list[str], visible: bool, keep_choice: bool) -> None:
    """Put ``choices`` (the detected order first) in ``combo`` and select the detected one, or
    (``keep_choice``) the user's, if it is not the detected order of before and is offered."""
    chosen = combo.value
    was_detected = list(combo.choices)[:1] == [chosen]
    keep = keep_choice and not was_detected and chosen in choices
    try:
        combo.choices = choices
        combo.value = chosen if keep else choices[0]
        combo.visible = visible
    except RuntimeError:  # the Qt widget is already gone (viewer closing)
        pass


def update_label_axes(combo: ComboBox, layer: Any, *, keep_choice: bool = False) -> None:
    """:func:`update_axes` for a Labels layer: orders without channels only (a small last axis
    is planes, ``YXZ``); shown for 3 or more axes."""
    from napari_unet.engine.axes import axes_choices, detect_label_axes

    if layer is None:
        combo.visible = False
        return
    shape = tuple(layer_array(layer).shape)
    try:
        detected = detect_label_axes(shape)
    except ValueError:  # no reading fits (6 or more axes): a click says so
        combo.visible = False
        return
    choices = [a for a in axes_choices(shape, detected) if "C" not in a]
    _offer(combo, choices, len(shape) >= 3, keep_choice)


class AxesFollower:
    """Keeps an axes combo in step with the layer chosen in ``picker``: a newly chosen layer
    gets its detected order; when the chosen layer's data are replaced (another shape, another
    number of axes), the orders offered and the detected one follow the new shape, and an
    order the user chose that still fits is kept (``update``: :func:`update_axes` or
    :func:`update_label_axes`). ``then`` is called after each update. Keep it as an attribute
    of ``owner``, whose destruction drops the connection to the layer."""

    def __init__(
        self,
        owner: QWidget,
        picker: ComboBox,
        combo: ComboBox,
        *,
        update: Any = update_axes,
        then: Any = None,
    ) -> None:
        from napari_unet._qt._disconnect import disconnect_when_destroyed

        self.picker, self.combo, self.update, self.then = picker, combo, update, then
        self._watching = disconnect_when_destroyed(owner)
        picker.changed.connect(self.layer_chosen)
        self.layer_chosen()

    def layer_chosen(self, *_: Any) -> None:
        """A layer was chosen: offer its axes, and follow its data."""
        self._watching.drop()
        layer = self.picker.value
        if layer is not None:
            self._watching.connect(layer.events.data, self.data_replaced)
        self.update(self.combo, layer)
        if self.then is not None:
            self.then()

    def data_replaced(self, *_: Any) -> None:
        """The chosen layer's data were replaced: offer the axes of their shape."""
        self.update(self.combo, self.picker.value, keep_choice=True)
        if self.then is not None:
            self.then()


def chosen_axes(combo: ComboBox, layer: Any) -> str | None:
    """The axes chosen for ``layer``, or ``None`` (detect them) when the choice does not fit
    it (another layer was picked meanwhile)."""
    value = combo.value
    if layer is None or not isinstance(value, str) or len(value) != len(layer_array(layer).shape):
        return None
    return value


def device_combo() -> ComboBox:
    """The compute device: ``auto`` or one of the engine's devices."""
    return ComboBox(label="device", choices=list(DEVICE_CHOICES), value="auto")


def diameter_field(tooltip: str) -> FloatSpinBox:
    """The cells' diameter in pixels; 0 means "measure or estimate it"."""
    return FloatSpinBox(
        label="cell diameter (px)", value=0.0, min=0.0, max=2000.0, step=1.0, tooltip=tooltip
    )


def number_control(
    label: str,
    value: float,
    bounds: tuple[float, float],
    step: float,
    tooltip: str,
    *,
    slider: bool = True,
) -> FloatSlider | FloatSpinBox:
    """A float control from ``bounds[0]`` to ``bounds[1]``: a slider (live previews) or a spin
    box (settings)."""
    kind = FloatSlider if slider else FloatSpinBox
    return kind(label=label, value=value, min=bounds[0], max=bounds[1], step=step, tooltip=tooltip)


def border_weight_controls(*, sliders: bool, w0_label: str, sigma_label: str) -> tuple[Any, Any]:
    """The w0 and sigma of the weight map (eq. 2 of the paper), at TrainConfig's defaults:
    sliders (live previews) or spin boxes (settings)."""
    defaults = TrainConfig()
    w0 = number_control(
        w0_label,
        defaults.w0,
        W0_RANGE,
        0.5,
        "Extra weight on the thin gaps between touching cells (the paper: 10).",
        slider=sliders,
    )
    sigma = number_control(
        sigma_label,
        defaults.sigma,
        SIGMA_RANGE,
        0.5,
        "How far from the gaps between cells the border weight reaches, in pixels (the paper: ~5).",
        slider=sliders,
    )
    return w0, sigma


def count_control(label: str, value: int, bounds: tuple[int, int], tooltip: str) -> SpinBox:
    """A whole-number control (steps, pixels) from ``bounds[0]`` to ``bounds[1]``."""
    return SpinBox(label=label, value=value, min=bounds[0], max=bounds[1], tooltip=tooltip)


def button_row(*buttons: tuple[str, str]) -> tuple[QHBoxLayout, list[QPushButton]]:
    """A row of push buttons, each given as ``(text, tooltip)``; returns the row and them."""
    row = QHBoxLayout()
    made = []
    for text, tooltip in buttons:
        button = QPushButton(text)
        button.setToolTip(tooltip)
        row.addWidget(button)
        made.append(button)
    return row, made


def ask_save_path(parent: Any, title: str, name: str, file_filter: str) -> str:
    """Ask where to save a file (a Qt dialog starting at ``~/name``); ``""`` when cancelled.

    ``file_filter`` may offer several formats (``"A (*.pt);;B (*.zip)"``); a name typed without
    a suffix gets the one of the format chosen in the dialog. The dialog does not ask about an
    existing file itself (see :func:`confirm_overwrite`).
    """
    path, chosen = QFileDialog.getSaveFileName(
        parent,
        title,
        str(Path.home() / name),
        file_filter,
        options=QFileDialog.Option.DontConfirmOverwrite,
    )
    found = re.search(r"\(\*(\.\w+)", chosen or "")
    if path and found and not Path(path).suffix:
        path += found.group(1)
    return path


def confirm_overwrite(parent: Any, path: Path) -> bool:
    """Ask whether to replace the existing file ``path``; ``True`` means yes."""
    answer = QMessageBox.question(
        parent,
        "Replace the model file?",
        f"{path.name} already exists in {path.parent}. Replace it?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


def scroll_layout(panel: QWidget) -> QVBoxLayout:
    """Give ``panel`` a vertical scroll area and return the layout to fill: a panel taller than
    the dock (a laptop screen, several panels docked) scrolls instead of pushing its buttons
    off-screen."""
    outer = QVBoxLayout(panel)
    outer.setContentsMargins(0, 0, 0, 0)
    area = QScrollArea(panel)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    content = QWidget()
    area.setWidget(content)
    outer.addWidget(area)
    return QVBoxLayout(content)


def show_text(label: Any, text: str) -> None:
    """Set a status line's text (a magicgui ``Label`` or a ``QLabel``); nothing when its Qt
    widget is gone (the viewer closed while a job ended)."""
    try:
        if hasattr(label, "setText"):
            label.setText(text)
        else:
            label.value = text
    except RuntimeError:
        pass


#: a model's name is elided beyond about this many characters (the full name is the tooltip)
MODEL_NAME_CHARS = 24


def model_description(entry: Any) -> str:
    """The full name of a model for a tooltip: a file's full path, else its label."""
    if getattr(entry, "kind", None) == "file" and isinstance(entry.source, (str, Path)):
        return f"{entry.label}\n{Path(entry.source).expanduser().resolve()}"
    return str(getattr(entry, "label", entry))


def elide_combo(combo: ComboBox) -> None:
    """Let a ComboBox of models elide a long name ("…") instead of widening the dock."""
    from qtpy.QtWidgets import QComboBox

    native = combo.native
    native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    native.setMinimumContentsLength(MODEL_NAME_CHARS)


def show_model_name(label: Any, entry: Any) -> None:
    """Show a model's whole name in a ``Label`` that wraps (never cut off, never widening
    the dock), with the full name and path as its tooltip."""
    label.native.setWordWrap(True)
    label.value = str(entry.label)
    label.tooltip = model_description(entry)


def status_label() -> Any:
    """A status line that wraps (long layer names must not widen the dock)."""
    label = Label(label="", value="")
    label.native.setWordWrap(True)
    return label
