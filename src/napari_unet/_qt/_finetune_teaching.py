"""The Fine-tune panel's *teaching layers*: what the network is taught, the weight map of the
painted cells and the augmented tile it just trained on. They are added hidden unless *show
weight map and augmented tiles* is ticked (each visible layer costs a repaint on a machine
without a GPU), and a hidden tile is not refreshed: the newest waits until the user opens it."""

from __future__ import annotations

from typing import Any

from napari_unet._qt._annotations import augmented_key, show_augmented_tile, show_weight_map
from napari_unet._qt._layers import find_owned, remove_owned, source_key

#: the role of the Fine-tune panel's layers (``metadata["napari_unet"]``)
ROLE = "finetune"
#: the two layers of the augmented tile (:func:`augmented_key`)
TILE_PARTS = ("image", "labels")


class TeachingLayers:
    """A mixin of :class:`~napari_unet._qt.finetune_widget.FineTuneWidget`: its ``viewer``, the
    run's painted cells (``_labels_layer``, shown at ``label_plane``), the newest augmented tile
    (``live.sample``) and the checkbox ``live_layers``."""

    def _show_weights(self, weight_map: Any) -> None:
        """Show the run's ``weight_map`` over its painted cells (hidden unless asked)."""
        layer = self._labels_layer
        if layer is not None and layer in self.viewer.layers:
            show_weight_map(
                self.viewer,
                layer,
                weight_map,
                role=ROLE,
                plane=self.label_plane,
                visible=bool(self.live_layers.value),
            )

    def _drop_tile(self) -> None:
        """Remove the augmented tile's layers."""
        for part in TILE_PARTS:
            remove_owned(self.viewer, augmented_key(ROLE, part))

    def _live_layers_changed(self, shown: bool) -> None:
        """*show weight map and augmented tiles* ticked or cleared: show or hide the teaching
        layers there already are (the tile, and the weight map of the chosen painted cells)."""
        labels = self.labels.value
        weights = find_owned(self.viewer, f"weights:total:{source_key(labels)}") if labels else None
        for layer in [*self._tile_layers(), weights]:
            if layer is not None:
                layer.visible = bool(shown)  # an opened tile shows the newest (_show_sample)

    def _tile_layers(self) -> list[Any]:
        """The augmented tile's layers in the viewer (none before the first tile)."""
        found = (find_owned(self.viewer, augmented_key(ROLE, part)) for part in TILE_PARTS)
        return [layer for layer in found if layer is not None]

    def _show_sample(self, _event: Any = None) -> None:
        """Show the newest augmented tile, if one came since the last. While both of its layers
        are hidden it waits (uploading it would only cost the GUI thread) and is shown when the
        user opens either of them."""
        layer = self._labels_layer
        if self.live.sample is None or layer is None or layer not in self.viewer.layers:
            return
        shown = self._tile_layers()
        if shown and not any(tile.visible for tile in shown):
            return
        layers = show_augmented_tile(
            self.viewer,
            layer,
            self.live.take_sample(),
            role=ROLE,
            plane=self.label_plane,
            visible=bool(self.live_layers.value),
        )
        for tile in layers:
            if tile not in shown:  # new: opening it shows the tile that waited
                tile.events.visible.connect(self._show_sample)
