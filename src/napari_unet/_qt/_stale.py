"""Results of replaced data are marked as such, not shown as current.

The panels' layers are made from a source layer (an image, labels) and keyed by it
(:func:`~napari_unet._qt._layers.source_key`). When the source's data are replaced
(``layer.data = other``: another image, another shape), those layers showed the old data's
result over the new as if current. Now they are *marked stale*: hidden and named
``"<name> (old data)"``, kept for reference; the next run of the same panel updates them in
place and gives back their name and visibility (:func:`~napari_unet._qt._layers.put_layer`).
Jobs still running on the old data stop (each panel watches its own) or drop their result.

The layers made from a source are named after it (``"<name> weight map"``) and found by their
key, which a rename of the source keeps: when the source is renamed, their names follow
(:func:`rename_made_from`), so that the names shown stay those of the layers they come from.
"""

from __future__ import annotations

import weakref
from typing import Any

from napari_unet._qt._layers import KEY_KEY, OWNER_KEY, STALE_KEY, source_key

STALE_SUFFIX = " (old data)"
#: the keys of the layers that show what training makes of a layer (its weight map, Inspect's
#: deformation of it): they mean nothing without it, and go when it is removed
#: (:func:`watch_for_stale`); results (a segmentation, an uncertainty) stay
DISPLAY_KINDS = ("weights:", "inspect:deformed-")

#: the viewers whose layers are watched (:func:`watch_for_stale`)
_WATCHED: weakref.WeakSet = weakref.WeakSet()


def made_from(viewer: Any, source: Any) -> list[Any]:
    """The plugin's layers in ``viewer`` made from ``source`` (their key ends in its
    :func:`~napari_unet._qt._layers.source_key`)."""
    suffix = f":{source_key(source)}"
    return [
        layer
        for layer in viewer.layers
        if OWNER_KEY in layer.metadata and str(layer.metadata.get(KEY_KEY, "")).endswith(suffix)
    ]


def mark_stale(viewer: Any, source: Any) -> list[Any]:
    """Mark the layers made from ``source`` stale (module notes); returns them."""
    marked = []
    for layer in made_from(viewer, source):
        if STALE_KEY in layer.metadata:
            continue
        layer.metadata[STALE_KEY] = {"name": layer.name, "visible": bool(layer.visible)}
        layer.name = f"{layer.name}{STALE_SUFFIX}"
        layer.visible = False
        marked.append(layer)
    return marked


def remove_made_from(viewer: Any, source: Any, *, kinds: tuple[str, ...]) -> list[str]:
    """Remove from ``viewer`` the plugin's layers made from ``source`` whose key starts with
    one of ``kinds`` (``"weights:"``: the weight maps); returns their names.

    For displays that mean nothing without their source once it is removed (a weight map of
    labels no longer in the viewer); results worth keeping (a segmentation) are not removed.
    """
    doomed = [
        layer
        for layer in made_from(viewer, source)
        if str(layer.metadata.get(KEY_KEY, "")).startswith(kinds)
    ]
    for layer in doomed:
        if layer in viewer.layers:
            viewer.layers.remove(layer)
    return [layer.name for layer in doomed]


def rename_made_from(viewer: Any, source: Any, old: str, new: str) -> list[Any]:
    """Give the layers made from ``source`` that are named after its ``old`` name
    (``"<old> weight map"``) its ``new`` one (``"<new> weight map"``); returns them.

    They are found by their key (:func:`made_from`), which a rename keeps, so their names only
    follow; a layer named otherwise (renamed by the user, or named after another layer: Inspect's
    deformed image is named after the image and keyed by the labels) keeps its name. A stale
    layer's name to give back (:func:`mark_stale`) follows too.
    """

    def renamed(name: str) -> str | None:
        rest = name[len(old) :]
        return new + rest if old and name.startswith(old) and rest.startswith(" ") else None

    changed = []
    for layer in made_from(viewer, source):
        stale = layer.metadata.get(STALE_KEY)
        if stale is not None and renamed(stale["name"]) is not None:
            stale["name"] = renamed(stale["name"])
        name = renamed(layer.name)
        if name is not None:
            layer.name = name
            changed.append(layer)
    return changed


def is_stale(layer: Any) -> bool:
    """Whether ``layer`` was made from data since replaced."""
    return layer is not None and STALE_KEY in layer.metadata


def watch_for_stale(viewer: Any) -> None:
    """Mark the results of any layer of ``viewer`` stale when its data are replaced, remove
    its displays (:data:`DISPLAY_KINDS`) when it is removed, and rename the layers named after
    it when it is renamed (:func:`rename_made_from`), from now on (once per viewer; every panel
    calls it)."""
    if viewer in _WATCHED:
        return
    _WATCHED.add(viewer)
    viewer_ref = weakref.ref(viewer)
    #: the name each watched layer had last (by ``id``): a rename event carries only the new one
    names: dict[int, str] = {}

    def replaced(event: Any) -> None:
        viewer = viewer_ref()
        if viewer is not None and event.source in viewer.layers:
            mark_stale(viewer, event.source)

    def name_changed(event: Any) -> None:
        layer = event.source
        old, names[id(layer)] = names.get(id(layer)), layer.name
        viewer = viewer_ref()
        if viewer is not None and old is not None and old != layer.name:
            rename_made_from(viewer, layer, old, layer.name)

    def watch(layer: Any) -> None:
        names[id(layer)] = layer.name
        layer.events.data.connect(replaced)
        layer.events.name.connect(name_changed)

    def inserted(event: Any) -> None:
        watch(event.value)

    def removed(event: Any) -> None:
        event.value.events.data.disconnect(replaced)
        event.value.events.name.disconnect(name_changed)
        names.pop(id(event.value), None)
        viewer = viewer_ref()
        if viewer is not None:  # a weight map of labels no longer shown stayed as an orphan
            remove_made_from(viewer, event.value, kinds=DISPLAY_KINDS)

    for layer in viewer.layers:
        watch(layer)
    viewer.layers.events.inserted.connect(inserted)
    viewer.layers.events.removed.connect(removed)
