"""The corrections layers of the correction loop (:mod:`~napari_unet._qt._corrections`): the
editable copy of a Segment result (in memory, or chunk by chunk into a zarr store for a
block-wise result), what it was copied from, and the annotation Fine-tune learns from it (the
corrected area only)."""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet._qt._annotations import plane_list, planes_with
from napari_unet._qt._layers import geometry_of
from napari_unet._qt._lazy import default_store, is_lazy
from napari_unet._qt._split_lines import add_split_lines, track_top_id
from napari_unet.engine.events import BlockDone

ROLE = "corrections"
#: without a cell diameter: the margin (px) of the inferred corrected area
DEFAULT_MARGIN = 10

#: corrections layer -> the Segment result it was copied from: a read-only copy of an in-memory
#: result, the (lazy, unread) array as copied of a block-wise one (:func:`as_copied`)
_ORIGINALS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
#: corrections layer -> (a weak reference to) the result layer it was copied from
_SOURCES: weakref.WeakKeyDictionary[Any, weakref.ref] = weakref.WeakKeyDictionary()
#: corrections layer -> (a weak reference to) the image that result segmented
_IMAGES: weakref.WeakKeyDictionary[Any, weakref.ref] = weakref.WeakKeyDictionary()
#: corrections layer of a block-wise result -> (the result layer's array it copied, that array's
#: dask name then): a paint into the result gives that very array a new graph and name
_COPIED: weakref.WeakKeyDictionary[Any, tuple[Any, Any]] = weakref.WeakKeyDictionary()


def original_of(layer: Any) -> Any:
    """The Segment result a corrections layer was copied from (an ndarray, or a lazy array for
    a block-wise result), or ``None``."""
    return _ORIGINALS.get(layer) if layer is not None else None


def image_of(layer: Any) -> Any:
    """The image whose Segment result a corrections layer copied, or ``None`` (not known, or
    gone)."""
    image = _IMAGES.get(layer) if layer is not None else None
    return image() if image is not None else None


def copy_of(viewer: Any, labels_layer: Any) -> Any:
    """The corrections layer in ``viewer`` copied from ``labels_layer`` as it is now (its data
    unchanged since the copy), or ``None``."""
    data = None
    for layer in viewer.layers:
        source = _SOURCES.get(layer)
        if source is None or source() is not labels_layer:
            continue
        copied = _COPIED.get(layer)
        # a lazy result: a rerun gives the layer new data, a paint a new graph
        if copied is not None:
            array, name = copied
            if array is labels_layer.data and name == getattr(array, "name", None):
                return layer
            continue
        original = _ORIGINALS[layer]
        if is_lazy(original) or is_lazy(labels_layer.data):
            continue  # not compared pixel by pixel: that reads the whole store
        if data is None:
            data = np.asarray(labels_layer.data)
        if original.shape == data.shape and np.array_equal(original, data):
            return layer
    return None


def start_correction(viewer: Any, labels_layer: Any, image_layer: Any = None) -> tuple[Any, Any]:
    """Copy ``labels_layer`` (the Segment result of ``image_layer``, if known) into
    ``"<name> corrections"`` and add its split-lines layer.

    Returns (corrections Labels layer, split-lines Shapes layer). The corrections layer is the
    user's (Fine-tune lists it, and picks ``image_layer`` with it); the split lines are a plugin
    tool layer.
    """
    data = np.array(labels_layer.data)
    original = data.copy()
    original.setflags(write=False)
    return add_corrections(
        viewer, labels_layer, image_layer, data, original, int(data.max(initial=0))
    )


def add_corrections(
    viewer: Any,
    labels_layer: Any,
    image_layer: Any,
    data: Any,
    original: Any,
    top: int,
    copied: tuple[Any, Any] | None = None,
) -> tuple[Any, Any]:
    """Add ``data`` (the editable copy: an ndarray, or a zarr array for a block-wise result) as
    the corrections layer of ``labels_layer``, copied from ``original`` (its highest id
    ``top``, kept in the metadata of a zarr copy, see
    :func:`~napari_unet._qt._split_lines.track_top_id`), and its split-lines layer; see
    :func:`start_correction`. ``copied``: for a block-wise result, (the result layer's array,
    its dask name) when copied, by which :func:`copy_of` knows the result unchanged."""
    from napari.layers import Labels

    geometry = geometry_of(labels_layer)
    corrections = Labels(data, name=f"{labels_layer.name} corrections", **geometry)
    _ORIGINALS[corrections] = original
    _SOURCES[corrections] = weakref.ref(labels_layer)
    if image_layer is not None:
        _IMAGES[corrections] = weakref.ref(image_layer)
    if copied is not None:
        _COPIED[corrections] = copied
    if is_lazy(data):  # a split's new ids go above it, without reading the whole store
        track_top_id(corrections, top)
    if top < np.iinfo(data.dtype).max:  # a missed cell is painted as a new object, not as 1
        corrections.selected_label = top + 1
    viewer.add_layer(corrections)  # known as a copy already when the panels' pickers see it
    return corrections, add_split_lines(viewer, corrections)


def as_copied(data: Any) -> Any:
    """Lazy labels ``data`` as they are now, unread: for a dask array, a new array over the same
    graph, which a paint into ``data`` leaves as it is (napari paints a dask array through its
    ``__setitem__``, which gives that very array a new graph); other data as they are."""
    if type(data).__module__.split(".")[0] != "dask":
        return data
    import dask.array as da

    return da.Array(data.dask, data.name, data.chunks, meta=data._meta)


def corrections_store(labels_layer: Any) -> Path:
    """Where the corrections of a block-wise result go: beside the store it shows
    (``metadata["store"]``), as ``<store>_corrections.zarr`` (``…_corrections_2.zarr`` and so
    on when taken); for lazy labels without a store, a new store in the temporary folder."""
    store = labels_layer.metadata.get("store")
    if not store:
        return default_store(f"{labels_layer.name} corrections")
    store = Path(store)
    stem = store.name.removesuffix(".zarr").removesuffix(".ome")
    target, n = store.with_name(f"{stem}_corrections.zarr"), 1
    while target.exists():
        n += 1
        target = store.with_name(f"{stem}_corrections_{n}.zarr")
    return target


def copy_labels_job(data: Any, target: Path, source_store: str | None = None):
    """Worker-thread generator: copy lazy labels ``data`` (dask or zarr, (Y, X) or planes
    before them, ids below 2**32) chunk by chunk into a new OME-Zarr store ``target``.

    Yields a ``BlockDone`` per chunk; returns ``(zarr array opened for writing, highest id)``.
    The axes named in ``source_store`` (the result's store) are written again; a cancelled
    copy leaves no store (:class:`~napari_unet.engine.zarr_io.LabelStore`).
    """
    import dask.array as da
    import zarr

    from napari_unet.engine.zarr_io import LabelStore, open_lazy

    source = da.asarray(data)
    axes = open_lazy(source_store)[1] if source_store else ""
    if len(axes) != source.ndim:
        axes = "TZYX"[-source.ndim :] if source.ndim > 3 else ""
    starts = [np.cumsum((0, *c)) for c in source.chunks]
    blocks = list(np.ndindex(*source.numblocks))
    top = 0
    with LabelStore(target, source.shape, chunks=source.chunksize, axes=axes or None) as store:
        for done, index in enumerate(blocks, 1):
            where = tuple(slice(s[i], s[i + 1]) for s, i in zip(starts, index, strict=True))
            block = np.asarray(source.blocks[index])
            store.array[where] = block
            top = max(top, int(block.max(initial=0)))
            yield BlockDone(done, len(blocks))
        path = store.commit()
    return zarr.open_group(str(path), mode="r+")["0"], top


def corrected_annotation(
    labels_layer: Any, plane: tuple[int, ...], labels: np.ndarray, regions: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """What Fine-tune learns from a corrections layer's plane: (labels, region).

    For any other layer ``(labels, regions)`` come back unchanged. For a corrections layer the
    corrected objects touching the area are the labels and the area the region (see
    :func:`engine.corrections.correction_annotation`); the area is ``regions`` when the user drew
    one, else the edits grown by half the median cell diameter.
    """
    from napari_unet.engine.corrections import correction_annotation
    from napari_unet.engine.diameter import estimate_diameter

    original = original_of(labels_layer)
    if original is None:
        return labels, regions
    before = np.asarray(original[plane] if plane else original)
    if before.shape != labels.shape:
        return labels, regions
    if regions is None and np.array_equal(before, labels):
        elsewhere = edited_planes(labels_layer, plane)
        if elsewhere:
            at = tuple(v for v in plane if not isinstance(v, slice))
            raise ValueError(
                f"nothing was corrected on plane {at} of '{labels_layer.name}', the plane on "
                f"screen; the corrections are on plane {plane_list(elsewhere)}: show one of "
                "them, or draw the corrected area"
            )
    margin = DEFAULT_MARGIN
    d = estimate_diameter(labels)
    if d is not None:
        margin = max(1, round(d / 2))
    labels, region = correction_annotation(before, labels, region=regions, margin=margin)
    if not labels.any():
        raise ValueError(
            "the corrected area holds no cell, only background; draw the corrected area (a "
            "Shapes layer, chosen as annotated regions) over some correct cells too"
        )
    return labels, region


def edited_planes(labels_layer: Any, plane: tuple[Any, ...]) -> list[tuple[int, ...]]:
    """The planes of a corrections layer that differ from the result it copied, as indices on
    the plane axes of ``plane`` (leading indices, or a full index with ``slice(None)`` on Y and
    X, see :func:`~napari_unet._qt._layers.labels_plane_index`); ``[]`` for a 2D layer and for
    the copy of a block-wise result."""
    original = original_of(labels_layer)
    data = labels_layer.data
    if original is None or original.shape != data.shape or is_lazy(original) or is_lazy(data):
        return []  # a block-wise result is not compared whole: that reads both stores
    return planes_with(original != np.asarray(data), plane)
