"""The split-lines tool of a corrections layer: a Shapes layer ``"<corrections>: split lines"``
whose lines or paths, once drawn, cut the object they cross in the corrections layer
(:func:`engine.corrections.split_object`) on the plane they were drawn on, as one undoable
edit. Only the planes cut are read: a lazy (zarr) corrections layer keeps its highest id in
its metadata (:func:`track_top_id`) instead of reading its whole store for it."""

from __future__ import annotations

import weakref
from functools import partial
from typing import Any

import numpy as np

from napari_unet._qt._layers import OWNER_KEY, geometry_of
from napari_unet._qt._lazy import is_lazy
from napari_unet._qt._worker import notify_error

ROLE = "corrections"
#: in a lazy corrections layer's metadata: an id at or above every id in its store
TOP_KEY = "napari_unet_top_id"

#: split-lines Shapes layer -> the corrections layer it cuts
_SPLIT_TARGETS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
#: the layers whose paints raise their TOP_KEY (connected once)
_TRACKED: weakref.WeakSet[Any] = weakref.WeakSet()


def split_lines_of(viewer: Any, corrections: Any) -> Any:
    """The split-lines layer in ``viewer`` that cuts ``corrections``, or ``None``."""
    return next((lyr for lyr in viewer.layers if _SPLIT_TARGETS.get(lyr) is corrections), None)


def add_split_lines(viewer: Any, corrections: Any) -> Any:
    """Add the split-lines Shapes layer of ``corrections`` (path mode) and make the
    corrections the active layer; returns the Shapes layer."""
    geometry = geometry_of(corrections)
    lines = viewer.add_shapes(
        ndim=corrections.ndim,
        name=f"{corrections.name}: split lines",
        shape_type="path",
        edge_color="yellow",
        edge_width=2,
        metadata={OWNER_KEY: ROLE},
        **geometry,
    )
    _SPLIT_TARGETS[lines] = corrections
    viewer_ref = weakref.ref(viewer)
    lines.events.data.connect(lambda event: _lines_drawn(lines, event, viewer_ref()))
    _remove_with(viewer, lines, corrections)
    lines.mode = "add_path"
    viewer.layers.selection.active = corrections
    return lines


def _remove_with(viewer: Any, tool: Any, owner: Any) -> None:
    """Remove the plugin layer ``tool`` from ``viewer`` when the layer ``owner`` is removed
    (split lines without their corrections layer would cut a layer no longer shown)."""
    tool_ref, owner_ref = weakref.ref(tool), weakref.ref(owner)

    def removed(event: Any) -> None:
        tool, owner = tool_ref(), owner_ref()
        if tool is None or owner is None or event.value is tool:
            viewer.layers.events.removed.disconnect(removed)
        elif event.value is owner:
            viewer.layers.events.removed.disconnect(removed)
            if tool in viewer.layers:
                viewer.layers.remove(tool)

    viewer.layers.events.removed.connect(removed)


def _lines_drawn(lines: Any, event: Any, viewer: Any) -> None:
    if str(getattr(event, "action", "added")) != "added":
        return
    displayed = None
    if viewer is not None:  # the line lies in the plane on screen (Y, X of a YXZ stack too)
        offset = viewer.dims.ndim - lines.ndim
        displayed = tuple(axis - offset for axis in viewer.dims.displayed[-2:])
    try:
        apply_split_lines(lines, displayed=displayed)
    except Exception as exc:  # a line that cuts nothing: tell, keep the labels
        notify_error(exc, "Split")


def apply_split_lines(lines: Any, *, displayed: tuple[int, int] | None = None) -> int:
    """Cut the corrections layer along every line of ``lines``, then clear the lines.

    ``displayed``: the two axes of the layers' data the lines were drawn on (rows, columns);
    ``None``: the last two. Each line cuts the plane it lies on, at its first vertex on the
    other axes; only those planes are read and written (a lazy layer's store is not read
    whole). A new piece gets an id above every id of the layer (:func:`highest_id`). The cuts
    are written as one edit of the corrections layer (napari's undo takes them back), not as
    new data.

    Returns the number of objects cut. A line that crosses no object or does not cut one in two
    raises ``ValueError`` (the lines are cleared all the same, the labels keep the other cuts).
    """
    from napari_unet.engine.corrections import split_object

    target = _SPLIT_TARGETS.get(lines)
    if target is None or not len(lines.data):
        return 0
    ndim, shape, dtype = target.ndim, target.data.shape, np.dtype(target.data.dtype)
    lazy = is_lazy(target.data)
    rows, cols = sorted(a % ndim for a in (displayed or (ndim - 2, ndim - 1)))
    # new pieces take ids above the whole layer's: the plane's own maximum may be an id that
    # another plane of a stack uses
    top_before = top = highest_id(target)
    # the planes cut: their index (slices on rows, columns), as read, as cut
    planes: dict[tuple[int | None, ...], tuple[tuple[Any, ...], np.ndarray, np.ndarray]] = {}
    cut, problems = 0, []
    for vertices in list(lines.data):
        points = np.array([target.world_to_data(lines.data_to_world(v)) for v in vertices])
        index: list[Any] = [slice(None)] * ndim
        for axis in range(ndim):
            if axis not in (rows, cols):
                index[axis] = min(max(int(round(points[0, axis])), 0), shape[axis] - 1)
        plane = tuple(index)
        key = tuple(None if isinstance(v, slice) else v for v in plane)  # slices: unhashable
        if key not in planes:
            read = np.array(target.data[plane])  # a copy: numpy data give a view
            planes[key] = (plane, read, read)
        _, before, current = planes[key]
        try:
            new = split_object(current, points[:, [rows, cols]], next_id=top + 1)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if lazy and new.dtype != dtype:  # a store keeps its dtype
            problems.append(f"no label id is left above {top} in '{target.name}' ({dtype})")
            continue
        planes[key] = (plane, before, new)
        top = max(top, int(new.max(initial=0)))
        cut += 1
    if cut:
        _write_planes(target, list(planes.values()), top_before, top)
    with lines.events.data.blocker():
        lines.data = []
    if problems:
        raise ValueError(problems[0])
    return cut


def _write_planes(
    target: Any,
    planes: list[tuple[tuple[Any, ...], np.ndarray, np.ndarray]],
    top_before: int,
    top: int,
) -> None:
    """Write the cut planes ((plane index, as read, as cut) each) into ``target`` as one
    undoable edit of the changed pixels; ``top_before``/``top``: the highest id before and
    after."""
    stored = np.dtype(target.data.dtype)
    dtype = np.result_type(stored, *(new.dtype for _, _, new in planes))
    if top_before < int(target.selected_label) <= top and top < np.iinfo(dtype).max:
        # the brush was on the next free id (a missed cell is painted as a new object), which
        # a new piece now has: a cell painted with it would share the piece's id
        target.selected_label = top + 1
    if dtype != stored:  # new ids past the dtype's range (in memory): new data
        edited = np.asarray(target.data).astype(dtype)
        for plane, _, new in planes:
            edited[plane] = new
        target.data = edited
        return
    indices: list[list[np.ndarray]] = [[] for _ in range(target.ndim)]
    values = []
    for plane, before, new in planes:
        changed = iter(np.nonzero(new != before))  # the plane's (rows, columns), in axis order
        n = int(np.count_nonzero(new != before))
        for axis, at in enumerate(plane):
            indices[axis].append(next(changed) if isinstance(at, slice) else np.full(n, at))
        values.append(new[new != before])
    where = tuple(np.concatenate(i) for i in indices)
    with target.block_history():  # one undoable edit, told as a paint (not new data)
        target.data_setitem(where, np.concatenate(values).astype(dtype))
    if TOP_KEY in target.metadata:
        target.metadata[TOP_KEY] = max(int(target.metadata[TOP_KEY]), top)


def highest_id(layer: Any) -> int:
    """The highest label id in ``layer``'s data (0 when empty).

    In-memory data: their maximum. Lazy (zarr, dask) data: the id kept in the layer's metadata
    (:func:`track_top_id`: from the copy, raised by every paint) without reading the store;
    without one, the maximum computed chunk by chunk (one chunk in memory at a time), then kept.
    """
    data = layer.data
    if not is_lazy(data):
        return int(np.asarray(data).max(initial=0))
    top = layer.metadata.get(TOP_KEY)
    if top is None:
        import dask.array as da

        top = int(da.asarray(data).max().compute()) if data.size else 0
        track_top_id(layer, top)
    return int(top)


def track_top_id(layer: Any, top: int) -> None:
    """Keep ``top``, the highest id of ``layer``'s (lazy) data, in ``metadata[TOP_KEY]``, raised
    by every paint, fill or edit (napari's ``paint`` event carries the values written). New
    data (``layer.data = …``) drop it, and :func:`highest_id` computes it again.

    An undo does not lower it: an id above it is still unused, which is all a split needs."""
    layer.metadata[TOP_KEY] = int(top)
    if layer in _TRACKED:
        return
    _TRACKED.add(layer)
    layer.events.paint.connect(partial(_raise_top, layer))
    layer.events.data.connect(partial(_drop_top, layer))


def _raise_top(layer: Any, event: Any) -> None:
    top = layer.metadata.get(TOP_KEY)
    if top is None:
        return
    for atom in event.value:  # napari's history atoms: a masked paint, or (indices, old, new)
        new = getattr(atom, "new_value", None)
        new = np.asarray(atom[2] if new is None else new)
        if new.size:
            top = max(int(top), int(new.max()))
    layer.metadata[TOP_KEY] = int(top)


def _drop_top(layer: Any, _event: Any = None) -> None:
    layer.metadata.pop(TOP_KEY, None)
