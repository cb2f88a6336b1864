"""Planning a block-wise segmentation: the blocks, and what is measured once for the whole image.

The (P, C, Y, X) dask view of any input (:func:`as_dask_planes`), its re-chunking when its chunks
do not fit the blocks, the blocks of a plane (:func:`block_grid`), and :func:`plan`, which measures
once what every block is segmented with (:class:`BlockSettings`): the normalisation percentiles
of each plane, the cell diameter, the halo and the stitching strips. Used by
:mod:`~napari_unet.engine.blockwise`; see there for the design.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_unet.engine.label_step import SEED_THRESHOLD

__all__ = [
    "DEFAULT_BLOCK",
    "HALO_DIAMETERS",
    "PERCENTILE_SAMPLE",
    "Block",
    "BlockSettings",
    "as_dask_planes",
    "block_grid",
    "plan",
    "plane_axes_shape",
]

#: Side of a block's core in input pixels when none is given: 2048² blocks of the bundled
#: model keep a worker under about 1 GB (docs/benchmarks/scaleout.md).
DEFAULT_BLOCK = 2048
#: The halo holds this many cell diameters beyond the network's border.
HALO_DIAMETERS = 2.0
#: Float images: the normalisation percentiles come from a strided sample of at most this many
#: pixels per plane and channel (integer images of 8 and 16 bits are counted exactly).
PERCENTILE_SAMPLE = 2**22


@dataclass(frozen=True)
class Block:
    """One block of one plane: its core and the region read around it, as (row0, row1, col0,
    col1) half-open pixel bounds in the plane; ``index`` is (block row, block column)."""

    plane: int
    index: tuple[int, int]
    core: tuple[int, int, int, int]
    region: tuple[int, int, int, int]


def block_grid(shape: tuple[int, int], *, block_size: int, halo: int, plane: int = 0) -> list[Block]:
    """The blocks of a (Y, X) plane, row by row; regions are clipped to the plane."""
    rows, cols = int(shape[0]), int(shape[1])
    out = []
    for i, r0 in enumerate(range(0, rows, block_size)):
        for j, c0 in enumerate(range(0, cols, block_size)):
            r1, c1 = min(r0 + block_size, rows), min(c0 + block_size, cols)
            region = (max(r0 - halo, 0), min(r1 + halo, rows), max(c0 - halo, 0), min(c1 + halo, cols))
            out.append(Block(plane, (i, j), (r0, r1, c0, c1), region))
    return out


@dataclass(frozen=True)
class BlockSettings:
    """What every block is segmented with; small and picklable (sent with every task).

    ``intensity_range`` holds per plane the per-channel (low, high) intensities;
    ``diameter`` is the one the blocks are rescaled for (``None``: no rescaling);
    ``min_size`` ``None``: the blocks keep every object, and those under the in-memory minimum
    of their plane's objects (:func:`~napari_unet.engine.stitch.drop_small`) are dropped after
    stitching;
    ``strip`` the half-width in pixels of the strips compared across block faces.
    """

    diameter: float | None
    min_size: int | None
    threshold: float
    min_confidence: float
    background_threshold: float
    tile_size: int | None
    device: str
    tta: bool
    intensity_range: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]
    strip: int
    halo: int
    block_size: int


# -------------------------------------------------------------------------------------
# the input as (P, C, Y, X) dask planes


def as_dask_planes(image: Any, *, channel_axis: int | None = None, stack: bool = False):
    """``image`` (numpy, zarr, dask or any sliceable array) as a lazy (P, C, Y, X) dask array.

    The layouts are those of :mod:`~napari_unet.engine.layout`, and with ``stack`` one or more
    plane axes before Y and X: a (T, Z, Y, X) image is T x Z planes, in order (T major), as the
    in-memory path flattens it (:class:`~napari_unet.engine.axes_layout.AxesLayout`); their
    sizes are :func:`plane_axes_shape`. Nothing is read.
    """
    import dask.array as da

    if isinstance(image, da.Array):
        arr = image
    elif isinstance(image, np.ndarray):
        arr = da.from_array(image, chunks=image.shape)
    else:
        chunks = getattr(image, "chunks", None)
        arr = da.from_array(image, chunks=chunks if isinstance(chunks, tuple) else "auto")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"the image must hold numbers, not {arr.dtype}")
    if channel_axis is None:
        arr = arr[..., np.newaxis, :, :]
    else:
        axis = channel_axis % arr.ndim
        if stack and axis == 0:
            raise ValueError("with a stack the channel axis cannot be the first axis")
        arr = da.moveaxis(arr, axis, -3)
    if not stack:
        arr = arr[np.newaxis]
    elif arr.ndim > 4:  # several plane axes (T, Z): one sequence of planes, read lazily
        arr = arr.reshape((math.prod(arr.shape[:-3]), *arr.shape[-3:]))
    if arr.ndim != 4:
        kind = "a stack of planes" if stack else "one plane"
        raise ValueError(f"the image has {image.ndim} dimensions, which is not {kind}")
    return arr


def plane_axes_shape(image: Any, *, channel_axis: int | None = None, stack: bool = False) -> tuple[int, ...]:
    """The sizes of ``image``'s plane axes (every axis before Y and X but the channel axis):
    ``()`` for one plane, ``(P,)`` for a stack, ``(T, Z)`` for a (T, Z, Y, X) stack. The labels
    of :func:`~napari_unet.engine.blockwise.iter_segment_blockwise` have these axes before
    (Y, X)."""
    if not stack:
        return ()
    shape = [int(s) for s in image.shape]
    if channel_axis is not None:
        del shape[channel_axis % len(shape)]
    return tuple(shape[:-2])


def _planes_chunked(planes, block_size: int) -> tuple[Any, str | None]:
    """Rechunk ``planes`` so that chunks hold whole channels and are not much smaller than a
    block (reading a block then touches few chunks); returns the array and a note or None."""
    _, _, row_chunks, col_chunks = planes.chunks
    small = max(row_chunks) * 4 < block_size or max(col_chunks) * 4 < block_size
    split_channels = len(planes.chunks[1]) > 1
    if not (small or split_channels):
        return planes, None
    side = min(block_size, 4096)
    note = (
        f"the input's chunks ({max(row_chunks)} x {max(col_chunks)} pixels"
        f"{', channels split' if split_channels else ''}) do not fit blocks of {block_size} "
        f"pixels; reading it in chunks of {side} x {side}"
    )
    return planes.rechunk((1, -1, side, side)), note


# -------------------------------------------------------------------------------------
# normalisation and diameter, once for the whole image


def _plane_percentiles(plane, low: float, high: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel ``low``/``high`` percentiles of a (C, Y, X) dask plane (computed by the
    current dask scheduler; a client's workers when one is active); ``high`` above ``low``
    even for a blank channel."""
    import dask

    from napari_unet.engine.normalization import _percentiles, percentiles_from_counts

    lows, highs = [], []
    for c in range(plane.shape[0]):
        channel = plane[c]
        if channel.dtype in (np.uint8, np.uint16, np.bool_):
            bins = 2 ** (8 * channel.dtype.itemsize) if channel.dtype != np.bool_ else 2
            parts = [
                dask.delayed(_histogram)(block, bins) for block in channel.to_delayed().ravel()
            ]
            counts = dask.delayed(sum)(parts).compute()
            lo, hi = percentiles_from_counts(counts, (low, high))
        else:
            step = max(1, math.ceil(math.sqrt(channel.size / PERCENTILE_SAMPLE)))
            sample = np.asarray(channel[::step, ::step].compute())
            if sample.dtype.kind == "f" and not np.isfinite(sample).all():
                raise ValueError("the image contains NaN or infinite values")
            lo, hi = _percentiles(sample, (low, high))
        lo, hi = float(lo), float(hi)
        if not hi > lo:  # a blank channel (or one value in all but a few pixels): as
            # ``normalize`` maps it, with a scale of 1 (a range low == high would be refused)
            hi = lo + max(1.0, abs(lo) * 2.0**-20)
        lows.append(lo)
        highs.append(hi)
    return tuple(lows), tuple(highs)


def _histogram(block: np.ndarray, bins: int) -> np.ndarray:
    values = np.asarray(block)
    if values.dtype == np.bool_:
        values = values.view(np.uint8)
    return np.bincount(values.ravel(), minlength=bins).astype(np.int64)


def _estimate_diameter(
    planes, model, *, threshold: float, min_confidence: float | None, device: Any,
    intensity_range: tuple[Any, Any] | None = None,
) -> float | None:
    """The cell diameter the in-memory path would estimate: the same crops of the same planes
    (:func:`~napari_unet.engine.diameter_estimate.estimation_planes`), read alone; as a stack of
    several, which the in-memory path then puts side by side as it would (and measures
    without the nuclei cut where two crops meet)."""
    from napari_unet.engine.diameter_estimate import estimation_planes
    from napari_unet.engine.events import drive
    from napari_unet.engine.segment import iter_segment

    crops = estimation_planes(planes)
    result = drive(
        iter_segment(
            crops if len(crops) > 1 else crops[0], model, channel_axis=1 if len(crops) > 1 else 0,
            stack=len(crops) > 1, threshold=threshold, min_confidence=min_confidence,
            device=device, intensity_range=intensity_range,
        )
    )  # fmt: skip
    return result.diameter


def require_own_unet(net: Any, checkpoint: Any) -> None:
    """Raise ``ValueError`` unless ``net`` is napari-unet's U-Net: the halo and the pooling grid
    of the blocks come from its depth and border, which a foreign BioImage.IO package's network
    does not have (it runs on whole images)."""
    from napari_unet.engine.models import require_unet

    require_unet(
        net,
        checkpoint,
        because=", which napari-unet runs on whole images only: block by block (zarr stores, "
        "dask arrays, --scheduler, --block-size, images over 4096² pixels) needs napari-unet's "
        "own U-Net",
    )


def plan(
    planes,
    model: Any,
    *,
    block_size: int | None = None,
    diameter: float | None = None,
    min_size: int | None = None,
    threshold: float = SEED_THRESHOLD,
    min_confidence: float | None = None,
    background_threshold: float | None = None,
    tile_size: int | None = None,
    device: str = "cpu",
    tta: bool = False,
    intensity_range: tuple[Any, Any] | None = None,
) -> tuple[BlockSettings, float, float | None]:
    """Measure what every block needs, once: percentiles per plane, the cell diameter, the
    halo and the strips. ``planes`` is (P, C, Y, X) dask. Returns the settings, the
    rescaling factor and the diameter given or measured (input pixels; None when unknown)."""
    from napari_unet.engine.diameter import (
        AUTO_DIAMETER_TOLERANCE,
        check_diameter,
        rescale_factor,
    )
    from napari_unet.engine.label_step import check_label_options, min_size_for
    from napari_unet.engine.limits import normalization_percentiles
    from napari_unet.engine.model import border
    from napari_unet.engine.models import load_model, model_normalization
    from napari_unet.engine.normalization import DEFAULT_HIGH, DEFAULT_LOW

    net, checkpoint = load_model(model, device="cpu")
    require_own_unet(net, checkpoint)
    if planes.shape[1] != int(net.config.in_channels):
        raise ValueError(
            f"the model reads {net.config.in_channels} channel(s), the image has {planes.shape[1]}"
        )
    threshold, min_confidence, background_threshold = check_label_options(
        threshold, min_confidence, background_threshold, checkpoint
    )
    block = DEFAULT_BLOCK if block_size is None else int(block_size)
    if block < 64:
        raise ValueError(f"block_size must be at least 64 pixels, not {block_size}")
    spatial = (int(planes.shape[2]), int(planes.shape[3]))
    trained = checkpoint.diameter
    norm = model_normalization(checkpoint)
    low, high = normalization_percentiles(norm) if norm else (DEFAULT_LOW, DEFAULT_HIGH)
    if intensity_range is None:
        ranges = tuple(_plane_percentiles(planes[p], low, high) for p in range(planes.shape[0]))
    else:
        from napari_unet.engine.normalization import channel_range

        given = tuple(tuple(float(v) for v in a) for a in channel_range(intensity_range, planes.shape[1]))
        ranges = (given,) * planes.shape[0]

    measured = None
    if diameter is not None:
        diameter = check_diameter(diameter, spatial)
        measured = diameter
    elif trained is not None:
        measured = _estimate_diameter(
            planes, (net, checkpoint), threshold=threshold, min_confidence=min_confidence,
            device=device, intensity_range=intensity_range,
        )  # fmt: skip
        if measured is not None:
            # as the in-memory path: no rescaling within the estimate's tolerance
            diameter = trained if abs(measured / trained - 1.0) <= AUTO_DIAMETER_TOLERANCE else measured
    factor = rescale_factor(diameter, trained) if diameter is not None else 1.0
    cell = measured if measured is not None else (trained or 32.0)
    step = 2 ** int(net.config.depth)
    halo = math.ceil(border(net.config.depth) / factor) + math.ceil(HALO_DIAMETERS * cell)
    halo = -(-halo // step) * step
    block = -(-block // step) * step
    # None (no size, no diameter): the in-memory rule over each whole plane, applied once the
    # blocks are stitched (blockwise's lookup pass); a block's own median would differ
    min_area = min_size_for(min_size, measured)
    settings = BlockSettings(
        diameter=diameter if trained is not None else None,
        min_size=None if min_area is None else int(min_area),
        threshold=threshold,
        min_confidence=min_confidence,
        background_threshold=background_threshold,
        tile_size=tile_size,
        device=str(device),
        tta=bool(tta),
        intensity_range=ranges,
        strip=max(4, min(halo // 2, math.ceil(cell))),
        halo=int(halo),
        block_size=int(block),
    )
    return settings, (factor if trained is not None else 1.0), measured
