"""Layer plumbing shared by the widgets: layer pickers, plugin-owned result layers, planes.

The plugin never modifies a user's layer. Every layer it creates carries
``metadata["napari_unet"] = <role>`` and ``metadata["napari_unet_key"] = <key>``; a rerun updates
the layer with the same key if it still exists (and is of the same kind), and adds a new one
otherwise. A plugin Labels layer the user has painted in (corrected) becomes the user's: a rerun
leaves it, with its undo history, as it is and adds a new layer.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox

from napari_unet._qt._disconnect import disconnect_when_destroyed
from napari_unet.engine.axes_layout import AxesLayout, guess_axes

OWNER_KEY = "napari_unet"
KEY_KEY = "napari_unet_key"
#: set in a plugin Labels layer's metadata once the user has painted in it
EDITED_KEY = "napari_unet_edited"
#: set (to the name and visibility it had) in a plugin layer whose source data were replaced
STALE_KEY = "napari_unet_stale"
NONE_CHOICE = "(none)"


# -- layer pickers ---------------------------------------------------------------------------
def layer_combo(
    viewer: Any,
    layer_type: type,
    *,
    label: str,
    nullable: bool = False,
    tooltip: str | None = None,
    exclude_plugin_layers: bool = False,
) -> ComboBox:
    """A ComboBox of the viewer's layers of ``layer_type``, kept up to date.

    Its value is the layer object (or ``None`` when ``nullable`` and nothing is picked). The
    choices are refreshed whenever layers are added, removed or renamed; the chosen layer stays
    chosen while it is in the viewer (renamed too), and ``changed`` is emitted only when the
    choice really changes.
    """

    def choices(_widget: Any = None) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        for layer in viewer.layers:
            if not isinstance(layer, layer_type):
                continue
            if exclude_plugin_layers and OWNER_KEY in layer.metadata:
                continue
            out.append((layer.name, layer))
        return out

    combo = ComboBox(label=label, choices=choices, nullable=nullable, tooltip=tooltip)
    if nullable:  # magicgui's own "-----" entry, worded as everywhere else
        combo.null_string = NONE_CHOICE
        combo.reset_choices()

    def refresh(_event: Any = None) -> None:
        try:
            before = combo.value
            with combo.changed.blocked():  # magicgui picks another layer when one is renamed
                combo.reset_choices()
                if before is not None and any(choice is before for choice in combo.choices):
                    combo.value = before
            if combo.value is not before:
                combo.changed.emit(combo.value)
        except RuntimeError:  # the Qt widget is already gone (viewer closing)
            return

    def watch_name(layer: Any) -> None:
        disconnector.connect(layer.events.name, refresh)

    def on_inserted(event: Any) -> None:
        watch_name(event.value)
        refresh()

    def on_removed(event: Any) -> None:
        emitter = event.value.events.name
        emitter.disconnect(refresh)
        disconnector.connections[:] = [
            pair for pair in disconnector.connections if pair[0] is not emitter
        ]
        refresh()

    # every connection is dropped when the picker is destroyed; not by a closure on
    # ``destroyed`` (see Disconnector)
    disconnector = disconnect_when_destroyed(combo.native)
    combo._layer_list_disconnector = disconnector
    events = viewer.layers.events
    disconnector.connect(events.inserted, on_inserted)
    disconnector.connect(events.removed, on_removed)
    disconnector.connect(events.reordered, refresh)
    for layer in viewer.layers:
        watch_name(layer)
    return combo


def pick_default(combo: ComboBox, predicate: Callable[[Any], bool]) -> None:
    """Select the first layer in ``combo`` for which ``predicate`` holds (if any)."""
    for choice in combo.choices:
        if choice is not None and predicate(choice):
            combo.value = choice
            return


# -- plugin-owned layers ---------------------------------------------------------------------
def source_key(layer: Any) -> str:
    """What identifies ``layer`` in the keys of the layers made from it (:func:`put_layer`):
    napari's ``unique_id``, which a rename keeps. Keyed by name, a renamed source got a second
    set of result layers beside the first (two weight maps, blended additively, showed their
    sum)."""
    return str(getattr(layer, "unique_id", None) or layer.name)


def find_owned(viewer: Any, key: str) -> Any | None:
    """The layer this plugin created under ``key``, if it is still in the viewer."""
    for layer in viewer.layers:
        if layer.metadata.get(KEY_KEY) == key and OWNER_KEY in layer.metadata:
            return layer
    return None


def geometry_of(layer: Any, ndim: int | None = None) -> dict[str, Any]:
    """``scale``, ``translate``, ``rotate``, ``shear`` and ``affine`` of ``layer``, keeping the
    last ``ndim`` axes (matrices: the rows and columns of those axes), so that a layer given
    them lies over ``layer`` however it is placed in the world."""
    n_axes = len(np.asarray(layer.scale))
    if ndim is None or ndim <= n_axes:
        return geometry_on_axes(layer, list(range(n_axes))[-(ndim or n_axes) :])
    # the result has more axes than the source (never expected): pad with identity
    scale = np.asarray(layer.scale, dtype=float)
    translate = np.asarray(layer.translate, dtype=float)
    pad = ndim - len(scale)
    scale = np.concatenate([np.ones(pad), scale])
    translate = np.concatenate([np.zeros(pad), translate])
    return {"scale": tuple(scale), "translate": tuple(translate)}


def geometry_on_axes(layer: Any, axes: list[int]) -> dict[str, Any]:
    """:func:`geometry_of` ``layer`` for a layer made of its axes ``axes`` (indices into its
    dims, RGB(A) colours not counted): ``scale``/``translate`` of those axes, and the rows and
    columns of those axes of its ``rotate``, ``shear`` (as matrices) and ``affine`` (homogeneous,
    with its translation column)."""
    keep = np.asarray(axes, dtype=int)
    n_axes = len(np.asarray(layer.scale))
    with_translation = np.append(keep, n_axes)
    return {
        "scale": tuple(np.asarray(layer.scale, dtype=float)[keep]),
        "translate": tuple(np.asarray(layer.translate, dtype=float)[keep]),
        "rotate": _geometry_value(layer, "rotate")[np.ix_(keep, keep)],
        "shear": _geometry_value(layer, "shear")[np.ix_(keep, keep)],
        "affine": _geometry_value(layer, "affine")[np.ix_(with_translation, with_translation)],
    }


def _geometry_value(layer: Any, attr: str) -> np.ndarray:
    """``layer``'s ``attr`` (a :func:`geometry_of` key) as an array: ``shear`` as its full
    matrix (napari returns its upper triangle), ``affine`` as its homogeneous matrix."""
    value = getattr(layer, attr)
    if attr == "affine":
        return np.asarray(value.affine_matrix, dtype=float)
    value = np.asarray(value, dtype=float)
    if attr == "shear" and value.ndim == 1:
        from napari.utils.transforms.transform_utils import expand_upper_triangular

        value = expand_upper_triangular(value)
    return value


def world_offset(geometry: dict[str, Any], offset: Any) -> np.ndarray:
    """The world displacement (before ``affine``) of a shift by ``offset`` data pixels in a
    layer of ``geometry`` (:func:`geometry_of`): its ``scale``, then ``shear`` and ``rotate``;
    added to ``translate``, it puts a piece of that layer's data at its place."""
    shifted = np.asarray(offset, dtype=float) * np.asarray(geometry["scale"], dtype=float)
    n = len(shifted)
    shear = np.asarray(geometry.get("shear", np.eye(n)), dtype=float)
    rotate = np.asarray(geometry.get("rotate", np.eye(n)), dtype=float)
    return rotate @ (shear @ shifted)


def put_layer(
    viewer: Any,
    data: np.ndarray,
    *,
    kind: str,
    name: str,
    key: str,
    role: str,
    geometry: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """Add a plugin-owned layer, or update the data of the one created earlier under ``key``.

    Parameters
    ----------
    viewer : the napari viewer.
    data : the layer data.
    kind : ``"image"`` or ``"labels"``.
    name : the name of a new layer (napari makes it unique).
    key : identifies the layer across reruns, e.g. ``"segment:labels:<image name>"``.
    role : stored in ``metadata["napari_unet"]`` (``"segment"``, ``"weights"``, ...).
    geometry : ``scale``/``translate`` (and ``rotate``/``shear``/``affine``) to give the layer
        (see :func:`geometry_of`).
    **kwargs : further keyword arguments for a new layer (colormap, visible, ...).

    Returns
    -------
    The layer.
    """
    geometry = geometry or {}
    layer = find_owned(viewer, key)
    if layer is not None and layer.metadata.get(EDITED_KEY):
        hand_over(layer)
        layer = None
    from napari.layers import Image, Labels

    layer_class = Labels if kind == "labels" else Image
    rgb = kwargs.get("rgb", False)
    compatible = (
        isinstance(layer, layer_class)
        and layer.data.ndim == data.ndim
        and (kind == "labels" or bool(layer.rgb) == bool(rgb))
    )
    if compatible:
        layer.data = data
        stale = layer.metadata.pop(STALE_KEY, None)
        if stale is not None:  # made again from the new data (see _stale)
            layer.name, layer.visible = stale["name"], stale["visible"]
        for attr, value in geometry.items():
            # each assignment re-emits through the layer list and redraws: only when it moves
            current, value = _geometry_value(layer, attr), np.asarray(value, float)
            if current.shape != value.shape or not np.allclose(current, value):
                setattr(layer, attr, value)
        if kind == "image" and "contrast_limits" in kwargs:
            layer.contrast_limits = kwargs["contrast_limits"]
        elif kind == "image" and not rgb:
            layer.reset_contrast_limits()
        return layer
    if layer is not None:  # same key but incompatible (e.g. 2D -> stack): replace our own layer
        viewer.layers.remove(layer)
    metadata = {OWNER_KEY: role, KEY_KEY: key}
    adder = viewer.add_labels if kind == "labels" else viewer.add_image
    layer = adder(data, name=name, metadata=metadata, **geometry, **kwargs)
    if kind == "labels":
        layer.events.paint.connect(partial(_mark_edited, layer))
    return layer


def _mark_edited(layer: Any, _event: Any = None) -> None:
    if OWNER_KEY in layer.metadata:
        layer.metadata[EDITED_KEY] = True


def hand_over(layer: Any) -> None:
    """Make a plugin layer the user's: no rerun updates or removes it again (its data, name
    and undo history stay as they are)."""
    for key in (OWNER_KEY, KEY_KEY, EDITED_KEY, STALE_KEY):
        layer.metadata.pop(key, None)


def remove_owned(viewer: Any, key: str) -> None:
    """Remove the plugin's layer stored under ``key`` if there is one."""
    layer = find_owned(viewer, key)
    if layer is not None:
        viewer.layers.remove(layer)


# -- image layouts -----------------------------------------------------------------------------
def layer_array(layer: Any) -> Any:
    """The full-resolution data of ``layer`` (level 0 of a multiscale layer), not yet loaded."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def spatial_shape(layer: Any) -> tuple[int, ...]:
    """The shape of ``layer`` without the RGB(A) axis."""
    shape = tuple(layer_array(layer).shape)
    return shape[:-1] if getattr(layer, "rgb", False) else shape


def current_plane_index(viewer: Any, layer: Any) -> tuple[int, ...]:
    """Indices into ``layer``'s leading (non-YX) axes for the plane the viewer shows now."""
    shape = spatial_shape(layer)
    n_lead = len(shape) - 2
    if n_lead <= 0:
        return ()
    world = [float(v) for v in viewer.dims.point]
    point = world[-layer.ndim :] if len(world) >= layer.ndim else [0.0] * layer.ndim
    data_point = list(layer.world_to_data(point))
    out = []
    for axis in range(n_lead):
        index = int(round(float(data_point[axis]))) if axis < len(data_point) else 0
        out.append(min(max(index, 0), shape[axis] - 1))
    return tuple(out)


#: how an image layer's axes map onto the engine's (see
#: :class:`~napari_unet.engine.axes_layout.AxesLayout`: ``to_engine``, ``from_engine``, ``stack``)
Layout = AxesLayout


def plan_layout(layer: Any, *, axes: str | None = None) -> Layout:
    """The :class:`Layout` of an image layer: ``axes`` (one letter per axis of its data), or
    detected as the panels' *axes* choice detects them (:func:`detected_axes`)."""
    shape = tuple(int(s) for s in layer_array(layer).shape)
    return Layout(shape, axes if axes is not None else detected_axes(layer)[0])


def detected_axes(layer: Any) -> tuple[str, str]:
    """The axes of an image layer's data as a one-channel model (the bundled one, and most)
    reads them, and a sentence when that is a guess between readings
    (:func:`~napari_unet.engine.axes_layout.guess_axes`: ``(2, 3, Y, X)`` is ``TZYX``);
    RGB(A) layers have their colours last."""
    shape = tuple(int(s) for s in layer_array(layer).shape)
    return guess_axes(shape, rgb=bool(getattr(layer, "rgb", False)))


def plane_index(viewer: Any, layer: Any, axes: str) -> tuple[Any, ...]:
    """The index into ``layer``'s data of the plane the viewer shows now: the viewer's position
    on each plane axis of ``axes`` (one letter per axis of the data, RGB(A) colours included;
    see :func:`plan_layout`), ``slice(None)`` on Y, X and C, wherever they stand (``YXZ``)."""
    rgb = bool(getattr(layer, "rgb", False))
    shape = tuple(int(s) for s in layer_array(layer).shape)
    n_dims = len(axes) - int(rgb)  # napari's dims exclude the RGB(A) axis
    world = [float(v) for v in viewer.dims.point]
    point = world[-n_dims:] if len(world) >= n_dims else [0.0] * n_dims
    data_point = list(layer.world_to_data(point))
    index: list[Any] = []
    for axis, letter in enumerate(axes):
        if letter in "YXC":
            index.append(slice(None))
            continue
        value = int(round(float(data_point[axis]))) if axis < len(data_point) else 0
        index.append(min(max(value, 0), shape[axis] - 1))
    return tuple(index)


def labels_plane_index(viewer: Any, layer: Any, axes: str | None = None) -> tuple[Any, ...]:
    """The plane of a Labels layer the viewer shows: :func:`current_plane_index` (planes on
    the leading axes) unless ``axes`` (one letter per axis of the labels, no C) put planes
    after Y or X (``YXZ``); then the full :func:`plane_index`. Either indexes the data
    (:func:`plane_of`) as ``(Y, X)``."""
    if axes is None or len(axes) != layer.ndim or axes.endswith("YX"):
        return current_plane_index(viewer, layer)
    return plane_index(viewer, layer, axes)


def current_image_plane(
    viewer: Any, layer: Any, *, axes: str | None = None
) -> tuple[Any, int | None]:
    """The plane of an Image layer the viewer shows now, as ``(Y, X)`` or ``(Y, X, C)``, and
    the ``channel_axis`` to pass to the engine (``-1`` or ``None``).

    ``axes`` (see :func:`plan_layout`) say which axes are planes, wherever they stand (``YXZ``):
    the viewer's position along each of them is taken; all channels of the plane are taken,
    whichever channel the viewer shows.
    """
    layout = plan_layout(layer, axes=axes)
    # no np.asarray: lazy (dask, zarr) data is read in the worker thread, not here; a zarr
    # array reads what it is indexed with, so it is indexed through dask (lazily)
    data = _lazily(layer_array(layer))[plane_index(viewer, layer, layout.axes)]
    kept = [letter for letter in layout.axes if letter in "YXC"]
    order = [kept.index(letter) for letter in "YXC" if letter in kept]
    if order != list(range(len(order))):
        data = data.transpose(order)
    return data, (-1 if "C" in kept else None)


def _lazily(data: Any) -> Any:
    """``data``, or a dask array over it when it is a zarr array (indexing one reads it)."""
    if type(data).__module__.split(".")[0] != "zarr":
        return data
    import dask.array as da

    empty = np.empty((0,) * data.ndim, data.dtype)  # dask would read an empty slice for it
    return da.from_array(data, chunks=getattr(data, "chunks", "auto"), meta=empty)


def embedded_plane(
    data: np.ndarray,
    layer: Any,
    plane: tuple[Any, ...],
    *,
    beside: float | None = None,
    layout: Layout | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """A ``(Y, X[, C])`` result of plane ``plane`` (a full :func:`plane_index`) of ``layer`` as
    an array in ``layer``'s own axes (colours, if any, stay last), one pixel thick on each plane
    axis, and the ``scale`` / ``translate`` that put it on that plane, so that it lies over the
    plane whatever order the axes are in and the viewer shows them. ``beside``: a gap in pixels;
    the result is put that far right of the plane instead of over it. ``layout``: how an image
    layer with channels is read (:func:`plan_layout`); the result then has its label axes
    (channels dropped, :func:`spatial_geometry`)."""
    if layout is not None:
        plane = tuple(v for v, c in zip(plane, layout.axes, strict=True) if c != "C")
        geometry = spatial_geometry(layer, layout)
    else:
        geometry = geometry_of(layer)
    plane_axes = [i for i, v in enumerate(plane) if not isinstance(v, slice)]
    offset = np.zeros(len(plane))  # in pixels of the layer's data
    for axis in plane_axes:
        offset[axis] = plane[axis]
    if beside is not None:
        x_axis = [i for i, v in enumerate(plane) if isinstance(v, slice)][1]
        offset[x_axis] += data.shape[1] + beside
    translate = np.asarray(geometry["translate"], dtype=float) + world_offset(geometry, offset)
    return np.expand_dims(data, plane_axes), {**geometry, "translate": tuple(translate)}


def is_embedded(plane: tuple[Any, ...]) -> bool:
    """Whether ``plane`` is a full index (planes after Y or X, see :func:`labels_plane_index`)
    whose results are shown with :func:`embedded_plane` rather than as 2D layers."""
    return any(isinstance(v, slice) for v in plane)


def spatial_geometry(layer: Any, layout: Layout) -> dict[str, Any]:
    """:func:`geometry_of` ``layer`` for a label image of ``layout`` (channels dropped)."""
    axes = list(range(len(np.asarray(layer.scale))))
    if layout.channel_axis is not None and not getattr(layer, "rgb", False):
        del axes[layout.channel_axis]
    return geometry_on_axes(layer, axes[-layout.spatial_ndim :])


#: pixels between a layer and a result shown beside it
SIDE_GAP = 16.0


def side_by_side_geometry(layer: Any, gap: float = SIDE_GAP) -> dict[str, Any]:
    """:func:`geometry_of` that places a 2D layer just right of ``layer``'s last plane."""
    geometry = geometry_of(layer, 2)
    shape = spatial_shape(layer)
    shift = world_offset(geometry, [0.0, shape[-1] + gap])
    return {**geometry, "translate": tuple(np.asarray(geometry["translate"]) + shift)}


# -- results -----------------------------------------------------------------------------------
#: the class whose probability is shown as the probability map (1 = cell interior)
CELL_CLASS = 1


def show_segmentation(
    viewer: Any,
    image_layer: Any,
    layout: Layout,
    result: Any,
    *,
    name: str | None = None,
    key_prefix: str = "segment",
    probabilities: bool = False,
) -> Any:
    """Put a ``SegmentResult`` into plugin-owned layers over ``image_layer``; return the labels
    layer. Shared by the Segment panel and the Fine-tune preview."""
    geometry = spatial_geometry(image_layer, layout)
    base = name or image_layer.name
    labels_layer = put_layer(
        viewer,
        layout.from_engine(result.labels),
        kind="labels",
        name=f"{base} labels",
        key=f"{key_prefix}:labels:{source_key(image_layer)}",
        role=key_prefix,
        geometry=geometry,
    )
    if probabilities:
        prob = result.probabilities
        cell = prob[:, CELL_CLASS] if layout.stack else prob[CELL_CLASS]
        put_layer(
            viewer,
            layout.from_engine(cell),
            kind="image",
            name=f"{base} probabilities",
            key=f"{key_prefix}:probabilities:{source_key(image_layer)}",
            role=key_prefix,
            geometry=geometry,
            colormap="magma",
            blending="additive",
            contrast_limits=(0.0, 1.0),
        )
    return labels_layer


# -- annotations -------------------------------------------------------------------------------
def plane_of(layer: Any, plane: tuple[int, ...]) -> Any:
    """The 2D (Y, X[, C]) plane ``plane`` of ``layer``'s data (a view where possible)."""
    return layer_array(layer)[plane] if plane else layer_array(layer)
