"""The split-lines tool of a corrections layer: a Shapes layer ``"<corrections>: split lines"``
whose lines or paths, once drawn, cut the object they cross in the corrections layer
(:func:`engine.corrections.split_object`) on the plane they were drawn on, as one undoable
edit."""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from napari_unet._qt._layers import OWNER_KEY, geometry_of
from napari_unet._qt._worker import notify_error

ROLE = "corrections"

#: split-lines Shapes layer -> the corrections layer it cuts
_SPLIT_TARGETS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


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
    other axes. A new piece gets an id that no plane of the layer uses. The cuts are written as
    one edit of the corrections layer (napari's undo takes them back), not as new data.

    Returns the number of objects cut. A line that crosses no object or does not cut one in two
    raises ``ValueError`` (the lines are cleared all the same, the labels keep the other cuts).
    """
    from napari_unet.engine.corrections import split_object

    target = _SPLIT_TARGETS.get(lines)
    if target is None or not len(lines.data):
        return 0
    ndim = target.ndim
    rows, cols = sorted(a % ndim for a in (displayed or (ndim - 2, ndim - 1)))
    data = np.asarray(target.data)
    edited = data.copy()
    cut, problems = 0, []
    for vertices in list(lines.data):
        points = np.array([target.world_to_data(lines.data_to_world(v)) for v in vertices])
        index: list[Any] = [slice(None)] * ndim
        for axis in range(ndim):
            if axis not in (rows, cols):
                index[axis] = min(max(int(round(points[0, axis])), 0), data.shape[axis] - 1)
        plane = tuple(index)
        try:
            # new pieces take ids above the whole layer's: the plane's own maximum may be an
            # id that another plane of a stack uses
            new = split_object(
                edited[plane], points[:, [rows, cols]], next_id=int(edited.max()) + 1
            )
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if new.dtype != edited.dtype:
            edited = edited.astype(new.dtype)
        edited[plane] = new
        cut += 1
    top_before, top = int(data.max(initial=0)), int(edited.max(initial=0))
    if cut and top_before < int(target.selected_label) <= top and top < np.iinfo(edited.dtype).max:
        # the brush was on the next free id (a missed cell is painted as a new object), which
        # a new piece now has: a cell painted with it would share the piece's id
        target.selected_label = top + 1
    if cut and edited.dtype == data.dtype:
        changed = np.nonzero(edited != data)
        with target.block_history():  # one undoable edit, told as a paint (not new data)
            target.data_setitem(changed, edited[changed])
    elif cut:  # new ids past the dtype's range: the data are replaced
        target.data = edited
    with lines.events.data.blocker():
        lines.data = []
    if problems:
        raise ValueError(problems[0])
    return cut
