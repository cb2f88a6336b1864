"""The Inspect dock widget: the paper's weight map and elastic deformations, live.

For any Labels layer it shows the weight map ``w = w_c + w0 * exp(-(d1 + d2)^2 / 2 sigma^2)``
(total, and its two parts) with sliders for ``w0`` and ``sigma`` that update the layers at once,
and a preview of the elastic deformation used in training (strength slider, *New sample*). The
numbers come from the engine (:func:`weights.weight_map`, :func:`augment.elastic_deform`),
computed in a worker thread; while one computation runs, only the newest request waits.

The user's layers are only read: results go into plugin-owned layers (see ``_layers``).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import napari
import numpy as np
from magicgui.widgets import Container, Label
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QLabel, QPushButton, QWidget

from napari_unet._qt._annotations import regions_mask, show_weight_map
from napari_unet._qt._closing import ClosingWatch
from napari_unet._qt._controls import (
    AxesFollower,
    axes_combo,
    border_weight_controls,
    chosen_axes,
    image_combo,
    number_control,
    regions_combo,
    scroll_layout,
    update_label_axes,
)
from napari_unet._qt._disconnect import disconnect_when_destroyed
from napari_unet._qt._error_layers import ErrorTools
from napari_unet._qt._inspect_jobs import compute_deformation, compute_weight_map
from napari_unet._qt._layers import (
    OWNER_KEY,
    SIDE_GAP,
    current_image_plane,
    embedded_plane,
    is_embedded,
    labels_plane_index,
    layer_array,
    layer_combo,
    pick_default,
    plane_of,
    put_layer,
    remove_owned,
    side_by_side_geometry,
    source_key,
    spatial_shape,
)
from napari_unet._qt._progress import PanelProgress
from napari_unet._qt._stale import watch_for_stale
from napari_unet._qt._worker import LatestOnly, notify_error, tell_user
from napari_unet.engine.train_config import TrainConfig

ROLE = "inspect"
#: the image (its :func:`source_key`) the deformed image layer was last made from
DEFORMED_FROM = "napari_unet_deformed_from"
#: Shapes data events that announce a change still in progress (the shape is not there yet)
_UNFINISHED_ACTIONS = {"adding", "changing", "removing"}


def _offer_label_axes(combo: Any, layer: Any, **kwargs: Any) -> None:
    """:func:`update_label_axes` without a recomputation: the caller recomputes once."""
    with combo.changed.blocked():
        update_label_axes(combo, layer, **kwargs)


def _title(text: str) -> QLabel:
    label = QLabel(f"<b>{text}</b>")
    label.setWordWrap(True)
    return label


class InspectWidget(QWidget):
    """Weight maps and elastic deformations of a Labels layer, with live sliders.

    napari injects the viewer (``napari_viewer``).

    Attributes
    ----------
    weights_runner, deform_runner : the :class:`~napari_unet._qt._worker.LatestOnly` runners
        (tests wait until they are no longer ``busy``).
    weight_layers : the [total, w_c, border term] layers last shown.
    deformed_labels, deformed_image : the preview layers last shown (``None`` before).
    seed : the random seed of the deformation shown; *New sample* increments it.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        watch_for_stale(napari_viewer)
        self.seed = 0
        self.progress = PanelProgress()
        self._busy: set[str] = set()
        self.weights_runner = LatestOnly(
            "Weight map", on_busy=partial(self._set_busy, "computing the weight map…")
        )
        self.deform_runner = LatestOnly(
            "Deformation preview", on_busy=partial(self._set_busy, "deforming…")
        )
        self.weight_layers: list[Any] = []
        self.deformed_labels: Any = None
        self.deformed_image: Any = None
        self._weights_shown = False
        self._deform_shown = False
        # the edits followed, and the viewer's plane: dropped when the panel is destroyed
        self._watching = disconnect_when_destroyed(self)
        self._disconnector = disconnect_when_destroyed(self)
        # napari announces a paint stroke before it writes the pixels: recompute once the event
        # loop is back (several events in a row give one recomputation)
        self._edit_timer = QTimer(self)
        self._edit_timer.setSingleShot(True)
        self._edit_timer.setInterval(0)
        self._edit_timer.timeout.connect(self._data_edited)

        self.labels = layer_combo(
            napari_viewer,
            napari.layers.Labels,
            label="labels",
            tooltip="The painted or segmented cells whose training weights you want to see.",
        )
        self.axes = axes_combo()
        self.axes.tooltip = (
            "One letter per axis of the labels: Y rows, X columns, Z / T planes. The weight "
            "map and the deformation are of the plane the viewer shows. The detected order "
            "comes first."
        )
        self.regions = regions_combo(
            napari_viewer,
            "Optional: inside these shapes unpainted pixels are background; outside, "
            "only the painted cells count (weight 0 elsewhere). Without shapes the whole image "
            "counts.",
        )
        self.w0, self.sigma = border_weight_controls(
            sliders=True, w0_label="w0 (border weight)", sigma_label="sigma (px)"
        )
        self.image = image_combo(
            napari_viewer, "Optional: the image to deform together with the labels.", nullable=True
        )
        self.strength = number_control(
            "deformation (px)",
            TrainConfig().elastic_sigma,
            (0.0, 30.0),
            1.0,
            "Standard deviation of the random displacements on a 3 x 3 grid, in pixels (the "
            "paper: 10). 0 leaves the image unchanged.",
        )
        self.status = Label(value="")
        self.status.native.setWordWrap(True)  # long layer names must not widen the dock
        weights_box = Container(widgets=[self.labels, self.axes, self.regions, self.w0, self.sigma])
        deform_box = Container(widgets=[self.image, self.strength])
        self.show_button = QPushButton("Show weight map")
        self.show_button.setToolTip(
            "Compute the weight map of the labels (current plane); the sliders then update it."
        )
        self.sample_button = QPushButton("New sample")
        self.sample_button.setToolTip(
            "Draw a new random elastic deformation and show it beside the labels."
        )

        layout = scroll_layout(self)
        layout.addWidget(_title("Weight map (equation 2 of the paper)"))
        layout.addWidget(weights_box.native)
        layout.addWidget(self.show_button)
        layout.addWidget(_title("Elastic deformation"))
        layout.addWidget(deform_box.native)
        layout.addWidget(self.sample_button)
        layout.addWidget(self.progress.bar)
        layout.addWidget(self.status.native)
        layout.addWidget(_title("Errors against reference labels"))
        self.errors = ErrorTools(napari_viewer)
        layout.addWidget(self.errors)
        layout.addStretch(1)

        pick_default(self.labels, lambda layer: OWNER_KEY not in layer.metadata)
        self._pick_image()
        self.show_button.clicked.connect(lambda: self.update_weights())
        self.sample_button.clicked.connect(lambda: self.new_sample())
        for widget in (self.w0, self.sigma):
            widget.changed.connect(self._weights_changed)
        self.strength.changed.connect(self._deform_changed)
        self.image.changed.connect(self._deform_changed)
        self.image.changed.connect(self._watch_layers)
        # first: the axes fit the labels before _labels_changed recomputes
        self._axes_follower = AxesFollower(self, self.labels, self.axes, update=_offer_label_axes)
        self.labels.changed.connect(self._labels_changed)
        self.axes.changed.connect(self._axes_changed)
        self.regions.changed.connect(self._regions_changed)
        self._watch_layers()
        self._disconnector.connect(napari_viewer.dims.events.current_step, self._plane_changed)
        self._closing = ClosingWatch(self, self._panel_closed)

    def _panel_closed(self) -> None:
        """The panel was closed (:mod:`~napari_unet._qt._closing`): its computations are
        dropped, and edits, sliders and plane changes no longer update its layers (*Show
        weight map* or *New sample* start them again)."""
        self._weights_shown = self._deform_shown = False
        self.weights_runner.cancel()
        self.deform_runner.cancel()
        self.errors.cancel()

    def _set_busy(self, what: str, busy: bool) -> None:
        """Show a moving bar while a weight map or a deformation is computed."""
        (self._busy.add if busy else self._busy.discard)(what)
        if self._busy:
            self.progress.busy(" · ".join(sorted(self._busy)))
        else:
            self.progress.stop()

    # -- layer choice and edits ----------------------------------------------------------
    def _image_fits(self, image: Any) -> bool:
        labels = self.labels.value
        return (
            image is not None
            and labels is not None
            and spatial_shape(image)[-2:] == spatial_shape(labels)[-2:]
        )

    def _pick_image(self) -> None:
        """Keep the image if it has the labels' rows and columns; otherwise pick a user image
        that has, or none."""
        if self._image_fits(self.image.value):
            return
        with self.image.changed.blocked():
            self.image.value = None
            pick_default(self.image, self._image_fits)

    def _watch_layers(self, *_: Any) -> None:
        """Follow edits of the chosen labels (painting, data replaced), regions (shapes drawn)
        and image (data replaced)."""
        self._watching.drop()
        for layer, names in (
            (self.labels.value, ("data", "paint")),
            (self.regions.value, ("data",)),
            (self.image.value, ("data",)),
        ):
            if layer is None:
                continue
            for name in names:
                emitter = getattr(layer.events, name, None)
                if emitter is not None:
                    self._watching.connect(emitter, self._layer_edited)

    def _labels_changed(self, *_: Any) -> None:
        self._watch_layers()
        self._pick_image()
        self._weights_changed()
        self._deform_changed()

    def _axes_changed(self, *_: Any) -> None:
        self._weights_changed()
        self._deform_changed()

    def _label_plane(self, layer: Any) -> tuple[Any, ...]:
        """The plane of ``layer`` the viewer shows, by the chosen axes
        (:func:`~napari_unet._qt._layers.labels_plane_index`)."""
        return labels_plane_index(self.viewer, layer, chosen_axes(self.axes, layer))

    def _regions_changed(self, *_: Any) -> None:
        self._watch_layers()
        self._weights_changed()

    def _layer_edited(self, event: Any = None) -> None:
        action = getattr(event, "action", None)
        if action is not None and str(action) in _UNFINISHED_ACTIONS:
            return
        if self._weights_shown or self._deform_shown:
            self._edit_timer.start()

    def _data_edited(self) -> None:
        """The labels, regions or image changed: what is shown follows (their data replaced,
        the deformation too: it was left showing the old data, marked stale by ``_stale``)."""
        self._weights_changed()
        self._deform_changed()

    def _plane_changed(self, *_: Any) -> None:
        layer = self.labels.value
        if layer is not None and len(spatial_shape(layer)) > 2:
            self._weights_changed()
            self._deform_changed()

    def _chosen_labels(self, what: str, quiet: bool) -> Any:
        """The chosen Labels layer; without one, tell the user (unless ``quiet``)."""
        layer = self.labels.value
        if layer is None and not quiet:
            tell_user(f"{what} failed: add or choose a Labels layer first.")
        return layer

    # -- weight map ----------------------------------------------------------------------
    def _weights_changed(self, *_: Any) -> None:
        if self._weights_shown:
            self.update_weights(quiet=True)

    def update_weights(self, *, quiet: bool = False) -> None:
        """Recompute the weight map of the chosen labels (current plane) with w0 and sigma.

        Without a Labels layer the user is told so, unless ``quiet`` (a live update after the
        layer went away, e.g. while the viewer closes).
        """
        layer = self._chosen_labels("Weight map", quiet)
        if layer is None:
            return
        self._weights_shown = True
        try:
            plane = self._label_plane(layer)
            labels = plane_of(layer, plane)
            regions = regions_mask(self.regions.value, layer, plane, tuple(labels.shape[-2:]))
        except Exception as exc:
            notify_error(exc, "Weight map")
            return
        shapes = self.regions.value
        if regions is None and shapes is not None and len(shapes.data):
            # shapes drawn on other planes of the stack only: this plane has no annotated region
            regions = np.zeros(labels.shape[-2:], bool)
        self.weights_runner.submit(
            compute_weight_map,
            labels,
            regions,
            w0=float(self.w0.value),
            sigma=float(self.sigma.value),
            on_result=partial(self._show_weights, layer, layer_array(layer), plane),
        )

    def _show_weights(self, layer: Any, data: Any, plane: tuple[Any, ...], result: Any) -> None:
        """Show the weight map ``result`` of ``plane`` of ``layer``, whose data were ``data``."""
        if layer not in self.viewer.layers or layer_array(layer) is not data:
            return  # removed, or its data replaced meanwhile (a newer request follows)
        self.weight_layers = show_weight_map(self.viewer, layer, result, role=ROLE, plane=plane)
        # asked for here: shown, also where Fine-tune made these layers hidden
        self.weight_layers[0].visible = True
        self.status.value = (
            f"weight map of {layer.name}: max {float(result.total.max()):.1f} "
            f"(w0 = {self.w0.value:g}, sigma = {self.sigma.value:g} px)"
        )

    # -- deformation ---------------------------------------------------------------------
    def _deform_changed(self, *_: Any) -> None:
        if self._deform_shown:
            self.update_deformation(quiet=True)

    def new_sample(self) -> None:
        """Draw a new random deformation and show it."""
        self.seed += 1
        self.update_deformation()

    def update_deformation(self, *, quiet: bool = False) -> None:
        """Deform the chosen labels (and image) with the current strength and seed
        (``quiet``: as for :meth:`update_weights`)."""
        layer = self._chosen_labels("Deformation preview", quiet)
        if layer is None:
            return
        self._deform_shown = True
        image_layer = self.image.value
        try:
            plane = self._label_plane(layer)
            labels = plane_of(layer, plane)
            image = None
            if image_layer is not None:
                # the labels' axes fit an image of as many axes (a YXZ image under YXZ labels)
                axes = chosen_axes(self.axes, layer)
                fits = axes is not None and len(axes) == image_layer.ndim
                image_axes = axes if fits and not image_layer.rgb else None
                image = current_image_plane(self.viewer, image_layer, axes=image_axes)[0]
        except Exception as exc:
            notify_error(exc, "Deformation preview")
            return
        rgb = image_layer is not None and bool(image_layer.rgb)
        sources = [layer_array(lyr) for lyr in (layer, image_layer) if lyr is not None]
        if image is not None:
            rows_cols = tuple(image.shape[:2] if rgb else image.shape[-2:])
            if image.ndim != (3 if rgb else 2) or rows_cols != tuple(labels.shape):
                tell_user(
                    f"Deformation preview failed: the image '{image_layer.name}' "
                    f"{tuple(image.shape)} does not match the labels '{layer.name}' "
                    f"{tuple(labels.shape)}; choose an image of the same size, or none."
                )
                return
        self.deform_runner.submit(
            compute_deformation,
            image,
            labels,
            sigma=float(self.strength.value),
            seed=self.seed,
            rgb=rgb,
            on_result=partial(self._show_deformation, layer, image_layer, plane, sources),
        )

    def _show_deformation(
        self,
        layer: Any,
        image_layer: Any,
        plane: tuple[Any, ...],
        sources: list[Any],
        arrays: tuple[np.ndarray | None, np.ndarray],
    ) -> None:
        """Show the deformed ``arrays`` of ``plane`` of ``layer`` (and ``image_layer``), made
        from the layers' data ``sources``."""
        layers = [lyr for lyr in (layer, image_layer) if lyr is not None]
        if layer not in self.viewer.layers or any(
            layer_array(lyr) is not data for lyr, data in zip(layers, sources, strict=True)
        ):
            return  # removed, or the data replaced meanwhile (a newer request follows)
        image, labels = arrays
        geometry = side_by_side_geometry(layer)
        if is_embedded(plane):  # planes after Y or X: on the plane, in the labels' axes
            labels, geometry = embedded_plane(labels, layer, plane, beside=SIDE_GAP)
            if image is not None:
                image = embedded_plane(image, layer, plane, beside=SIDE_GAP)[0]
        image_key = f"{ROLE}:deformed-image:{source_key(layer)}"
        if image is None or image_layer not in self.viewer.layers:
            remove_owned(self.viewer, image_key)
            self.deformed_image = None
        else:
            display = (
                {"rgb": True}
                if image_layer.rgb
                else {
                    "colormap": image_layer.colormap.name,
                    "contrast_limits": tuple(image_layer.contrast_limits),
                }
            )
            self.deformed_image = put_layer(
                self.viewer,
                image,
                kind="image",
                name=f"{image_layer.name} deformed",
                key=image_key,
                role=ROLE,
                geometry=geometry,
                **display,
            )
            # keyed by the labels, named after the image: another image takes the name over
            made_from = self.deformed_image.metadata.get(DEFORMED_FROM)
            if made_from is not None and made_from != source_key(image_layer):
                self.deformed_image.name = f"{image_layer.name} deformed"
            self.deformed_image.metadata[DEFORMED_FROM] = source_key(image_layer)
        self.deformed_labels = put_layer(
            self.viewer,
            labels,
            kind="labels",
            name=f"{layer.name} deformed",
            key=f"{ROLE}:deformed-labels:{source_key(layer)}",
            role=ROLE,
            geometry=geometry,
        )
        self.status.value = (
            f"deformation sample {self.seed} ({self.strength.value:g} px), right of {layer.name}"
        )
