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

from napari_unet._qt._layers import layer_combo
from napari_unet.engine.device import DEVICE_CHOICES
from napari_unet.engine.train_config import TrainConfig

LEADING_PLANES = "planes (Z / time)"
LEADING_CHANNELS = "channels"
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


def leading_axis_combo() -> ComboBox:
    """The "first axis" choice for a grayscale layer with 3 or more axes: planes or channels."""
    return ComboBox(
        label="first axis",
        choices=[LEADING_PLANES, LEADING_CHANNELS],
        value=LEADING_PLANES,
        tooltip="For a 3D grayscale layer: is the first axis a stack of planes or channels?",
    )


def leading_axis_applies(layer: Any) -> bool:
    """Whether the "first axis" choice means anything for ``layer`` (grayscale, 3+ axes)."""
    return layer is not None and not getattr(layer, "rgb", False) and layer.ndim >= 3


def leading_is_channels(combo: ComboBox, layer: Any) -> bool:
    """Whether ``layer``'s first axis is to be read as channels (the combo's choice, if it
    applies to the layer)."""
    return leading_axis_applies(layer) and combo.value == LEADING_CHANNELS


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
    """Set a status ``Label``'s text; nothing when its Qt widget is gone (the viewer closed
    while a job ended)."""
    try:
        label.value = text
    except RuntimeError:
        pass


def status_label() -> Any:
    """A status line that wraps (long layer names must not widen the dock)."""
    label = Label(label="", value="")
    label.native.setWordWrap(True)
    return label


def disconnect_all(connections: list[tuple[Any, Any]]) -> None:
    """Disconnect every ``(emitter, callback)`` pair and empty the list; emitters that are
    already gone are passed over."""
    for emitter, callback in connections:
        try:
            emitter.disconnect(callback)
        except (RuntimeError, TypeError, ValueError):  # already gone
            pass
    connections.clear()
