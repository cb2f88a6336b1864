"""Segmenting a lazy (dask or zarr) layer without loading it: block by block into a zarr store.

The Segment panel runs :func:`lazy_segment_job` instead of its in-memory job when the layer's
data is a dask or zarr array. The blocks (:mod:`napari_unet.engine.blockwise`) are read from the
layer's array one at a time in the worker thread, the labels go to a new zarr store
(:class:`~napari_unet.engine.zarr_io.LabelStore`: moved into place only when complete, removed on
Cancel or an error), and the main thread shows that store as a lazy Labels layer.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LazyResult", "default_store", "is_lazy", "lazy_segment_job"]


def is_lazy(data: Any) -> bool:
    """Whether layer data is a dask or zarr array (read on demand, maybe larger than memory)."""
    return type(data).__module__.split(".")[0] in ("dask", "zarr")


def default_store(layer_name: str) -> Path:
    """Where the labels of a lazy layer go when no store is named: a new store in the
    temporary folder, ``napari-unet/<layer>_labels_<time>.zarr`` (``…_<time>_2.zarr`` and so
    on when a run of the same second made that one)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", layer_name).strip("._") or "image"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = Path(tempfile.gettempdir()) / "napari-unet"
    store, n = folder / f"{safe}_labels_{stamp}.zarr", 1
    while store.exists():
        n += 1
        store = folder / f"{safe}_labels_{stamp}_{n}.zarr"
    return store


@dataclass(frozen=True)
class LazyResult:
    """What :func:`lazy_segment_job` returns: the store written and what was found."""

    store: Path
    n_objects: int
    diameter: float | None


def lazy_segment_job(data: Any, layout: Any, entry: Any, store: Path, **options: Any):
    """Worker-thread generator: segment the lazy layer ``data`` block by block into ``store``.

    ``layout`` is the layer's :class:`~napari_unet._qt._layers.Layout` (plane axes before Y and
    X, e.g. ZYX or TZYX, are segmented plane by plane); the data are read in the engine's order,
    RGB(A) gray for a one-channel model, as in memory (``Layout.for_blocks``). ``options`` go to
    :func:`~napari_unet.engine.blockwise.iter_segment_blockwise`.
    """
    import dask.array as da

    from napari_unet._qt._segment_call import load_entry
    from napari_unet.engine.block_plan import require_own_unet
    from napari_unet.engine.blockwise import DEFAULT_BLOCK, iter_segment_blockwise
    from napari_unet.engine.zarr_io import LabelStore

    model = load_entry(entry)
    require_own_unet(*model)
    try:
        image, channel_axis, stack = layout.for_blocks(
            da.asarray(data), in_channels=int(model[0].config.in_channels), ngff=True
        )
    except ValueError as exc:
        raise ValueError(f"{exc}; choose such axes, or load the layer into memory") from None
    out_shape = layout.label_shape  # the engine's (planes..., Y, X) order, as checked above
    block = int(options.pop("block_size", None) or DEFAULT_BLOCK)
    chunks = (1,) * len(layout.lead_shape) + tuple(min(block, n) for n in out_shape[-2:])
    with LabelStore(store, out_shape, chunks=chunks, axes=layout.label_axes) as target:
        result = yield from iter_segment_blockwise(
            image, model, out=target.array, channel_axis=channel_axis, stack=stack,
            block_size=block, **options,
        )
        path = target.commit()
    return LazyResult(path, result.n_objects, result.diameter)


def show_lazy_labels(viewer: Any, layer: Any, result: LazyResult) -> Any:
    """Show the store of ``result`` as a lazy Labels layer over ``layer``: the plugin layer
    of Segment's labels of ``layer`` (keyed by it, as the in-memory result,
    :func:`~napari_unet._qt._layers.show_segmentation`), so that it is marked ``(old data)``
    when ``layer``'s data are replaced and a rerun updates it in place; its ``metadata["store"]``
    names the store it shows."""
    import dask.array as da

    from napari_unet._qt._layers import geometry_of, put_layer, source_key

    labels = da.from_zarr(str(result.store), component="0")
    shown = put_layer(
        viewer,
        labels,
        kind="labels",
        name=f"{layer.name} labels",
        key=f"segment:labels:{source_key(layer)}",
        role="segment",
        geometry=geometry_of(layer, labels.ndim),
    )
    shown.metadata["store"] = str(result.store)
    return shown
