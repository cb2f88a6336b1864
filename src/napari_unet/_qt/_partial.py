"""What a stopped Segment job leaves: the planes done, in one plugin Labels layer named
``"<image> labels (partial, k of n planes)"``, the planes not done 0."""

from __future__ import annotations

from typing import Any

from napari_unet._qt._layers import Layout, put_layer, source_key, spatial_geometry


def partial_name(image_name: str, done: int, n_planes: int) -> str:
    """The name of the layer of a stopped job's planes."""
    return f"{image_name} labels (partial, {done} of {n_planes} planes)"


def show_partial(viewer: Any, image_layer: Any, layout: Layout, partial: Any) -> Any | None:
    """Put the planes of ``partial`` (a :class:`~napari_unet.engine.partial.PartialLabels`)
    over ``image_layer``; returns the layer, or ``None`` when no plane was done.

    The layer is the plugin's own (one per image, reused by the next stopped job and renamed);
    a complete result of an earlier run stays in its own layer.
    """
    labels = partial.labels()
    if labels is None or image_layer not in viewer.layers:
        return None
    name = partial_name(image_layer.name, partial.done, partial.n_planes)
    layer = put_layer(
        viewer,
        layout.from_engine(labels),
        kind="labels",
        name=name,
        key=f"segment:partial:{source_key(image_layer)}",
        role="segment",
        geometry=spatial_geometry(image_layer, layout),
    )
    layer.name = name
    return layer
