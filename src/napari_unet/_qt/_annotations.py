"""Annotations on layers: the painted plane a training run reads, the regions drawn around
painted cells, and the weight map and augmented tiles shown for them."""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_unet._qt._layers import (
    SIDE_GAP,
    current_image_plane,
    embedded_plane,
    geometry_of,
    geometry_on_axes,
    is_embedded,
    labels_plane_index,
    layer_array,
    plan_layout,
    plane_of,
    put_layer,
    side_by_side_geometry,
    source_key,
)
from napari_unet._qt._lazy import is_lazy

#: shape types that enclose no area: not annotated regions (:func:`regions_mask`)
OPEN_SHAPES = ("line", "path")


def painted_plane(
    viewer: Any,
    image_layer: Any,
    labels_layer: Any,
    shapes_layer: Any,
    *,
    axes: str | None = None,
) -> tuple[Any, int | None, np.ndarray, np.ndarray | None, tuple[Any, ...]]:
    """The plane of the painted cells the viewer shows, ready for training.

    Returns the image plane (Y, X[, C]; not yet read when lazy), its ``channel_axis`` (``-1``
    or ``None``), a (Y, X) copy of the labels (painting may go on), the (Y, X) bool mask of
    the annotated regions (``None`` without a Shapes layer) and the labels' plane index
    (:func:`~napari_unet._qt._layers.labels_plane_index`, where results of it are shown).

    Raises ``ValueError`` with a sentence for the user when something is missing or does not
    fit (no layer, no painted cell on this plane, different shapes, no region drawn). Of lazy
    (dask, zarr) labels only the plane on screen is read.
    """
    if image_layer is None:
        raise ValueError("add or choose an image layer first")
    if labels_layer is None:
        raise ValueError("add a Labels layer and paint a few cells in it first")
    label_axes = plan_layout(image_layer, axes=axes).label_axes
    label_plane = labels_plane_index(viewer, labels_layer, label_axes)
    labels = np.array(plane_of(labels_layer, label_plane))  # a copy: painting may go on
    at = [v for v in label_plane if not isinstance(v, slice)]
    where = f" on plane {tuple(at)}" if at else ""
    if labels.ndim != 2:
        raise ValueError(f"the labels '{labels_layer.name}' are not a 2D plane{where}")
    image, channel_axis = current_image_plane(viewer, image_layer, axes=axes)
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
        whole = layer_array(labels_layer)
        # lazy labels (dask, zarr) may be larger than memory: only the plane on screen is read
        elsewhere = [] if is_lazy(whole) else planes_with(np.asarray(whole) != 0, label_plane)
        if elsewhere:
            raise ValueError(
                f"no painted cells in '{labels_layer.name}'{where}, the plane on screen; cells "
                f"are painted on plane {plane_list(elsewhere)}: show one of them"
            )
        raise ValueError(
            f"no painted cells in '{labels_layer.name}'{where}; paint a few cells (one id "
            "per cell) first"
        )
    regions = None
    if shapes_layer is not None:
        regions = regions_mask(shapes_layer, labels_layer, label_plane, labels.shape)
        if regions is None:
            raise ValueError(
                f"the regions layer '{shapes_layer.name}' has no shape on this plane (lines "
                "and paths enclose no area); draw rectangles or polygons around fully painted "
                "areas, or choose (none)"
            )
        if not regions.any():
            raise ValueError(
                f"the regions of '{shapes_layer.name}' on this plane cover no pixel of the "
                f"labels '{labels_layer.name}' (they lie outside them); draw them over the "
                "painted cells, or choose (none)"
            )
    from napari_unet._qt._correction_layers import corrected_annotation

    # a corrections layer teaches its corrected area only (the edits, or the regions drawn)
    labels, regions = corrected_annotation(labels_layer, label_plane, labels, regions)
    return image, channel_axis, labels, regions, label_plane


def placement_warning(image_layer: Any, labels_layer: Any, *, axes: str | None = None) -> str:
    """A sentence when ``labels_layer`` lies elsewhere in the viewer than ``image_layer`` (their
    Y and X axes differ in scale, translate, rotate, shear or affine), else ``""``.

    Training pairs the pixels of a plane of the same shape one to one, as stored; cells painted
    over the image as the viewer shows it (a Labels layer made at another scale, or moved) are
    then learnt where they do not lie in the image.
    """
    layout = plan_layout(image_layer, axes=axes)
    image_axes = layout.axes.replace("C", "") if getattr(image_layer, "rgb", False) else layout.axes
    label_axes = layout.label_axes
    if len(label_axes) != labels_layer.ndim:  # a 2D Labels layer over a stack
        label_axes = "YX".rjust(labels_layer.ndim, "P")
    image = geometry_on_axes(image_layer, [image_axes.index("Y"), image_axes.index("X")])
    labels = geometry_on_axes(labels_layer, [label_axes.index("Y"), label_axes.index("X")])
    differ = [k for k in image if not np.allclose(image[k], labels[k])]
    if not differ:
        return ""
    shown = [
        f"{k} {_numbers(labels[k])} against {_numbers(image[k])}"
        for k in ("scale", "translate")
        if k in differ
    ] or [" and ".join(differ)]
    return (
        f"the labels '{labels_layer.name}' lie elsewhere than the image '{image_layer.name}' in "
        f"the viewer ({', '.join(shown)}); training pairs their pixels one to one, as stored: if "
        "you painted over the image as shown, paint on a Labels layer made for it (select the "
        "image, then New labels)"
    )


def _numbers(values: Any) -> str:
    """``(0.5, 0.5)``: a few numbers, as short as they go."""
    return "(" + ", ".join(f"{float(v):g}" for v in values) + ")"


def planes_with(found: np.ndarray, plane: tuple[Any, ...]) -> list[tuple[int, ...]]:
    """The planes of a bool array ``found`` (a layer's shape) that hold a True pixel, as
    indices on the plane axes of ``plane`` (leading indices, or a full index with
    ``slice(None)`` on Y and X, see :func:`~napari_unet._qt._layers.labels_plane_index`);
    ``[]`` for a 2D array or an empty ``plane``."""
    if not plane or found.ndim <= 2:
        return []
    full = tuple(plane) + (slice(None),) * (found.ndim - len(plane))
    yx = tuple(i for i, v in enumerate(full) if isinstance(v, slice))
    return [tuple(int(i) for i in index) for index in np.argwhere(np.any(found, axis=yx))]


def plane_list(planes: list[tuple[int, ...]], most: int = 5) -> str:
    """``"(3,), (7,), …"``: the first ``most`` of ``planes`` (:func:`planes_with`)."""
    return ", ".join(str(p) for p in planes[:most]) + (", …" if len(planes) > most else "")


def regions_mask(
    shapes_layer: Any, target_layer: Any, plane: tuple[int, ...], shape: tuple[int, int]
) -> np.ndarray | None:
    """Rasterise ``shapes_layer`` onto plane ``plane`` of ``target_layer``'s pixel grid.

    Shape vertices go from the shapes layer's data coordinates through world coordinates into
    the target's. Over a stack, a shape drawn on a plane counts for that plane only; a 2D shapes
    layer counts for every plane. ``plane`` is the plane's leading indices or a full index with
    ``slice(None)`` on Y and X (:func:`~napari_unet._qt._layers.labels_plane_index`). Lines and
    paths enclose no area and are left out (rasterised, they made a one-pixel-wide "region").
    Returns a (Y, X) bool array, True inside any shape, or ``None`` when there is no shapes
    layer or no rectangle, ellipse or polygon on this plane.
    """
    from napari.layers import Shapes

    if shapes_layer is None or len(shapes_layer.data) == 0:
        return None
    ndim = target_layer.ndim
    full = tuple(plane) + (slice(None),) * (ndim - len(plane))
    plane_axes = [i for i, v in enumerate(full) if not isinstance(v, slice)]
    yx_axes = [i for i, v in enumerate(full) if isinstance(v, slice)][-2:]
    check_plane = bool(plane_axes) and shapes_layer.ndim >= ndim
    polygons, types = [], []
    for vertices, shape_type in zip(shapes_layer.data, shapes_layer.shape_type, strict=True):
        if shape_type in OPEN_SHAPES:
            continue
        # world_to_data pads a shorter point with leading zeros and keeps a longer one's tail
        points = np.array(
            [target_layer.world_to_data(shapes_layer.data_to_world(v)) for v in vertices]
        )
        if check_plane:
            at = np.round(points[:, plane_axes]).astype(int)
            if not np.all(at == np.asarray([full[i] for i in plane_axes])):
                continue
        polygons.append(points[:, yx_axes])
        types.append(shape_type)
    if not polygons:
        return None
    masks = Shapes(polygons, shape_type=types).to_masks(mask_shape=shape)
    return np.any(masks, axis=0)


def show_weight_map(
    viewer: Any,
    labels_layer: Any,
    weight_map: Any,
    *,
    role: str,
    visible: bool = True,
    visible_parts: bool = False,
    plane: tuple[Any, ...] = (),
) -> list[Any]:
    """Show a ``WeightMap`` as plugin-owned image layers over ``labels_layer``'s rows and columns.

    Three layers, keyed by the labels layer (:func:`~napari_unet._qt._layers.source_key`): the
    total weight (hidden unless ``visible``) and its two parts, ``w_c`` and the border term
    (hidden unless ``visible_parts``); a rerun keeps whatever visibility the user gave them.
    Returns the layers in that order. A ``plane``
    with planes after Y or X (:func:`~napari_unet._qt._layers.labels_plane_index`, ``YXZ``)
    puts the maps on that plane, in the labels' own axes.
    """
    geometry = geometry_of(labels_layer, 2)
    name = labels_layer.name
    parts = [
        ("total", f"{name} weight map", weight_map.total, visible),
        ("class_term", f"{name} weight w_c", weight_map.class_term, visible_parts),
        ("border_term", f"{name} weight border term", weight_map.border_term, visible_parts),
    ]
    if is_embedded(plane):
        embedded = [embedded_plane(data, labels_layer, plane) for _, _, data, _ in parts]
        geometry = embedded[0][1]
        parts = [(p, t, e[0], v) for (p, t, _, v), e in zip(parts, embedded, strict=True)]
    return [
        put_layer(  # an update keeps the layer's display settings; these apply to a new layer
            viewer,
            data,
            kind="image",
            name=title,
            key=f"weights:{part}:{source_key(labels_layer)}",  # one set per labels layer, both panels
            role=role,
            geometry=geometry,
            colormap="inferno",
            blending="additive",
            visible=visible,
        )
        for part, title, data, visible in parts
    ]


def augmented_key(role: str, part: str) -> str:
    """The key of the augmented tile's ``part`` (``"image"`` or ``"labels"``) of a panel
    (:func:`show_augmented_tile`): one pair per panel, whichever labels it came from."""
    return f"{role}:augmented:{part}"


def show_augmented_tile(
    viewer: Any,
    labels_layer: Any,
    sample: Any,
    *,
    role: str,
    plane: tuple[Any, ...] = (),
    visible: bool = True,
) -> list[Any]:
    """Show an ``AugmentationSample`` (normalised image, deformed labels) right of
    ``labels_layer``, in the layers *augmented tile* and *augmented tile labels* (returned in
    that order; new ones hidden unless ``visible``, existing ones as the user left them). A
    ``plane``
    with planes after Y or X (:func:`~napari_unet._qt._layers.labels_plane_index`, ``YXZ``)
    puts the tile right of that plane, in the labels' own axes (as a 2D layer it lay across
    X and Z)."""
    geometry = side_by_side_geometry(labels_layer)
    image = np.asarray(sample.image, dtype=np.float32)
    labels = np.asarray(sample.labels)
    rgb = False
    if image.ndim == 3:
        if image.shape[0] in (3, 4):
            image, rgb = np.clip(np.moveaxis(image, 0, -1), 0.0, 1.0), True
        else:
            image = image.mean(axis=0)
    if is_embedded(plane):
        x_axis = [i for i, v in enumerate(plane) if isinstance(v, slice)][1]
        # beside the plane: its width and the gap, less the tile's (embedded_plane adds it)
        gap = layer_array(labels_layer).shape[x_axis] - labels.shape[1] + SIDE_GAP
        labels, geometry = embedded_plane(labels, labels_layer, plane, beside=gap)
        image = embedded_plane(image, labels_layer, plane, beside=gap)[0]
    parts = (("image", image, "augmented tile"), ("labels", labels, "augmented tile labels"))
    return [
        put_layer(
            viewer,
            data,
            kind=part,
            name=name,
            key=augmented_key(role, part),
            role=role,
            geometry=geometry,
            visible=visible,
            **({"rgb": rgb} if part == "image" else {}),
        )
        for part, data, name in parts
    ]
