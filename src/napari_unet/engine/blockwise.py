"""Block-wise segmentation: images larger than memory, in one process or on a dask cluster.

The plane is cut into square *blocks* (the *core*, ``block_size`` pixels per side). Each block
is segmented with its core plus a *halo* around it by the ordinary pipeline
(:func:`~napari_unet.engine.segment.iter_segment`: rescaling to the model's training diameter,
overlap-tile prediction, instances), so that every pixel of the core sees the context it would
see in the whole image:

- the halo is the network's border (:func:`~napari_unet.engine.model.border`, in input pixels
  after the rescaling) plus :data:`HALO_DIAMETERS` cell diameters, so that the prediction in the
  core equals the whole image's and every cell touching the core lies whole inside the block;
- the normalisation percentiles are computed **once** over the whole plane (exact histograms
  for 8- and 16-bit images, a strided sample of at most :data:`PERCENTILE_SAMPLE` pixels
  otherwise) and handed to every block, and the cell diameter is estimated once, on the same
  central crop the in-memory path uses; a block never measures anything of its own.

A block writes the labels of its core only, with ids of its own; the ids are made global by an
offset per block (in block order, so the result does not depend on the order blocks finish in)
and the objects that cross block faces are joined by :mod:`~napari_unet.engine.stitch`: both
neighbours label a strip of ``strip`` pixels on each side of their shared face, the ids that
overlap there are one object, and a connected-components pass over those pairs gives a lookup
table that a last pass applies to every block. StarDist's ``predict_instances_big`` (blocks with
context, each block keeping the objects it is responsible for) and Cellpose's
``distributed_segmentation`` (unique ids per block, a graph over block faces) are the designs
this follows; docs/scaleout.md compares them.

Memory: one block (image region, float32 copy, probabilities, labels) per worker, the strips
(``4 * strip * block_size`` ids per block) and the lookup table (one entry per block id) on the
driver; nothing grows with the number of pixels but the output array itself, which may live on
disk (a zarr array). :func:`iter_segment_blockwise` runs the blocks in this process or, given a
``dask.distributed`` client, on its workers (the model is scattered to every worker once);
:func:`segment_dask` returns a lazy dask array instead.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import warnings
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_unet.engine.events import BlockDone, Note

__all__ = [
    "DEFAULT_BLOCK",
    "HALO_DIAMETERS",
    "Block",
    "BlockSettings",
    "BlockwiseResult",
    "as_dask_planes",
    "block_grid",
    "iter_segment_blockwise",
    "plan",
    "segment_blockwise",
    "segment_dask",
]

#: Side of a block's core in input pixels when none is given: 2048² blocks of the bundled
#: model keep a worker under about 1 GB (docs/benchmarks/scaleout.md).
DEFAULT_BLOCK = 2048
#: The halo holds this many cell diameters beyond the network's border.
HALO_DIAMETERS = 2.0
#: Float images: the normalisation percentiles come from a strided sample of at most this many
#: pixels per plane and channel (integer images of 8 and 16 bits are counted exactly).
PERCENTILE_SAMPLE = 2**22
#: Blocks may retry this many times on a cluster (a worker that died, a lost connection).
RETRIES = 2


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
    ``strip`` the half-width in pixels of the strips compared across block faces.
    """

    diameter: float | None
    min_size: int | None
    threshold: float
    tile_size: int | None
    device: str
    tta: bool
    intensity_range: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...]
    strip: int
    halo: int
    block_size: int


@dataclass(frozen=True, eq=False)
class BlockLabels:
    """What one block hands back: its core's labels in block ids 1..n (uint32), and the strips
    along its faces that have a neighbour (``"top"``, ``"bottom"``, ``"left"``, ``"right"``)."""

    core: np.ndarray
    n_ids: int
    strips: dict[str, np.ndarray]


@dataclass(frozen=True, eq=False)
class BlockwiseResult:
    """What :func:`iter_segment_blockwise` returns.

    Attributes
    ----------
    labels : (Y, X) or (P, Y, X) uint32 array-like
        The ``out`` array given (e.g. a zarr array), or a new ndarray; ids 1..n_objects.
    n_objects : int
    diameter : float or None
        The cell diameter (input pixels) the blocks were segmented for.
    scale : float
        The rescaling factor every block used.
    n_blocks : int
    """

    labels: Any
    n_objects: int
    diameter: float | None
    scale: float
    n_blocks: int


# -------------------------------------------------------------------------------------
# the input as (P, C, Y, X) dask planes


def as_dask_planes(image: Any, *, channel_axis: int | None = None, stack: bool = False):
    """``image`` (numpy, zarr, dask or any sliceable array) as a lazy (P, C, Y, X) dask array.

    The layouts are those of :mod:`~napari_unet.engine.layout`; nothing is read.
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
    if arr.ndim != 4:
        kind = "a stack of planes" if stack else "one plane"
        raise ValueError(f"the image has {image.ndim} dimensions, which is not {kind}")
    return arr


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
    current dask scheduler; a client's workers when one is active)."""
    import dask

    from napari_unet.engine.normalization import _percentiles

    lows, highs = [], []
    for c in range(plane.shape[0]):
        channel = plane[c]
        if channel.dtype in (np.uint8, np.uint16, np.bool_):
            bins = 2 ** (8 * channel.dtype.itemsize) if channel.dtype != np.bool_ else 2
            parts = [
                dask.delayed(_histogram)(block, bins) for block in channel.to_delayed().ravel()
            ]
            counts = dask.delayed(sum)(parts).compute()
            lo, hi = _percentiles_from_counts(counts, (low, high))
        else:
            step = max(1, math.ceil(math.sqrt(channel.size / PERCENTILE_SAMPLE)))
            sample = np.asarray(channel[::step, ::step].compute())
            if sample.dtype.kind == "f" and not np.isfinite(sample).all():
                raise ValueError("the image contains NaN or infinite values")
            lo, hi = _percentiles(sample, (low, high))
        lows.append(float(lo))
        highs.append(float(hi))
    return tuple(lows), tuple(highs)


def _histogram(block: np.ndarray, bins: int) -> np.ndarray:
    values = np.asarray(block)
    if values.dtype == np.bool_:
        values = values.view(np.uint8)
    return np.bincount(values.ravel(), minlength=bins).astype(np.int64)


def _percentiles_from_counts(counts: np.ndarray, qs: tuple[float, float]) -> np.ndarray:
    """Percentiles (linear method, as ``np.percentile``) of the values 0..len-1 counted in
    ``counts``; the same arithmetic as :func:`~napari_unet.engine.normalization._percentiles`."""
    cum = np.cumsum(counts)
    n = cum[-1]
    result = []
    for q in qs:
        pos = q / 100.0 * (n - 1)
        below = np.searchsorted(cum, np.floor(pos), side="right")
        above = np.searchsorted(cum, np.ceil(pos), side="right")
        result.append(below + (above - below) * (pos - np.floor(pos)))
    return np.asarray(result, np.float64)


def _estimate_diameter(planes, model, *, threshold: float, device: Any) -> float | None:
    """The cell diameter the in-memory path would estimate: the same central crop of the
    middle plane (:data:`~napari_unet.engine.segment.ESTIMATE_CROP`), read alone."""
    from napari_unet.engine.events import drive
    from napari_unet.engine.segment import ESTIMATE_CROP, iter_segment

    n, _, rows, cols = planes.shape
    r0, c0 = max(0, (rows - ESTIMATE_CROP) // 2), max(0, (cols - ESTIMATE_CROP) // 2)
    crop = np.asarray(planes[n // 2, :, r0 : r0 + ESTIMATE_CROP, c0 : c0 + ESTIMATE_CROP].compute())
    result = drive(iter_segment(crop, model, channel_axis=0, threshold=threshold, device=device))
    return result.diameter


def plan(
    planes,
    model: Any,
    *,
    block_size: int | None = None,
    diameter: float | None = None,
    min_size: int | None = None,
    threshold: float = 0.5,
    tile_size: int | None = None,
    device: str = "cpu",
    tta: bool = False,
) -> tuple[BlockSettings, float, float | None]:
    """Measure what every block needs, once: percentiles per plane, the cell diameter, the
    halo and the strips. ``planes`` is (P, C, Y, X) dask. Returns the settings, the
    rescaling factor and the diameter given or measured (input pixels; None when unknown)."""
    from napari_unet.engine.diameter import (
        AUTO_DIAMETER_TOLERANCE,
        check_diameter,
        rescale_factor,
    )
    from napari_unet.engine.limits import normalization_percentiles
    from napari_unet.engine.model import border
    from napari_unet.engine.models import load_model, model_normalization
    from napari_unet.engine.normalization import DEFAULT_HIGH, DEFAULT_LOW
    from napari_unet.engine.segment import _min_size_for

    net, checkpoint = load_model(model, device="cpu")
    if planes.shape[1] != int(net.config.in_channels):
        raise ValueError(
            f"the model reads {net.config.in_channels} channel(s), the image has {planes.shape[1]}"
        )
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must be between 0 and 1, not {threshold}")
    block = DEFAULT_BLOCK if block_size is None else int(block_size)
    if block < 64:
        raise ValueError(f"block_size must be at least 64 pixels, not {block_size}")
    spatial = (int(planes.shape[2]), int(planes.shape[3]))
    trained = checkpoint.diameter
    norm = model_normalization(checkpoint)
    low, high = normalization_percentiles(norm) if norm else (DEFAULT_LOW, DEFAULT_HIGH)
    ranges = tuple(_plane_percentiles(planes[p], low, high) for p in range(planes.shape[0]))

    measured = None
    if diameter is not None:
        diameter = check_diameter(diameter, spatial)
        measured = diameter
    elif trained is not None:
        measured = _estimate_diameter(planes, (net, checkpoint), threshold=threshold, device=device)
        if measured is not None:
            # as the in-memory path: no rescaling within the estimate's tolerance
            diameter = trained if abs(measured / trained - 1.0) <= AUTO_DIAMETER_TOLERANCE else measured
    factor = rescale_factor(diameter, trained) if diameter is not None else 1.0
    cell = measured if measured is not None else (trained or 32.0)
    step = 2 ** int(net.config.depth)
    halo = math.ceil(border(net.config.depth) / factor) + math.ceil(HALO_DIAMETERS * cell)
    halo = -(-halo // step) * step
    block = -(-block // step) * step
    min_area = _min_size_for(min_size, measured)
    if min_area is None:
        from napari_unet.engine.instances import DEFAULT_MIN_SIZE

        min_area = DEFAULT_MIN_SIZE  # a per-block adaptive size would differ between blocks
    settings = BlockSettings(
        diameter=diameter if trained is not None else None,
        min_size=int(min_area),
        threshold=float(threshold),
        tile_size=tile_size,
        device=str(device),
        tta=bool(tta),
        intensity_range=ranges,
        strip=max(4, min(halo // 2, math.ceil(cell))),
        halo=int(halo),
        block_size=int(block),
    )
    return settings, (factor if trained is not None else 1.0), measured


# -------------------------------------------------------------------------------------
# one block


def _strip_bounds(block: Block, shape: tuple[int, int], strip: int) -> dict[str, tuple[int, int, int, int]]:
    """The strips along the faces of ``block`` that have a neighbour, in plane pixels."""
    r0, r1, c0, c1 = block.core
    rows, cols = shape
    out = {}
    if r0 > 0:
        out["top"] = (max(r0 - strip, 0), min(r0 + strip, rows), c0, c1)
    if r1 < rows:
        out["bottom"] = (max(r1 - strip, 0), min(r1 + strip, rows), c0, c1)
    if c0 > 0:
        out["left"] = (r0, r1, max(c0 - strip, 0), min(c0 + strip, cols))
    if c1 < cols:
        out["right"] = (r0, r1, max(c1 - strip, 0), min(c1 + strip, cols))
    return out


def segment_block(
    region: np.ndarray, model: Any, settings: BlockSettings, block: Block, shape: tuple[int, int]
) -> BlockLabels:
    """Segment the (C, y, x) ``region`` of ``block`` (its core plus halo, read from a plane of
    ``shape``) and return its core labels and face strips in block ids.

    Only objects with pixels in the core get ids (1..n); the strips show those objects alone.
    """
    from napari_unet.engine.events import drive
    from napari_unet.engine.segment import iter_segment

    low, high = settings.intensity_range[block.plane]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "no training diameter": said once by the planner
        result = drive(
            iter_segment(
                np.asarray(region),
                model,
                channel_axis=0,
                diameter=settings.diameter,
                device=settings.device,
                threshold=settings.threshold,
                min_size=settings.min_size,
                tile_size=settings.tile_size,
                tta=settings.tta,
                intensity_range=(low, high),
            )
        )
    labels = result.labels
    R0, _, C0, _ = block.region
    r0, r1, c0, c1 = block.core
    core = labels[r0 - R0 : r1 - R0, c0 - C0 : c1 - C0]
    ids = np.unique(core)
    ids = ids[ids > 0]
    local = np.zeros(int(labels.max()) + 1, np.uint32)
    local[ids] = np.arange(1, ids.size + 1, dtype=np.uint32)
    strips = {
        face: local[labels[a - R0 : b - R0, c - C0 : d - C0]]
        for face, (a, b, c, d) in _strip_bounds(block, shape, settings.strip).items()
    }
    return BlockLabels(local[core], int(ids.size), strips)


# -------------------------------------------------------------------------------------
# the model on workers: sent once, loaded once per worker process

_WORKER_MODELS: dict[str, Any] = {}


@dataclass(frozen=True, eq=False)
class ModelPayload:
    """A model file's bytes, to be scattered to the workers once; loaded (and kept) once per
    worker process by :func:`worker_model`."""

    data: bytes
    key: str = field(default="")

    @classmethod
    def from_model(cls, model: Any) -> ModelPayload:
        """The bytes of ``model`` (a path, ``"default"``/None, or a network) as a file."""
        from napari_unet.engine.models import bundled_model_path, load_model

        if model is None or (isinstance(model, str) and model == "default"):
            model = bundled_model_path()
        if isinstance(model, (str, os.PathLike)):
            data = open(model, "rb").read()
        else:
            from napari_unet.engine.checkpoint import save_checkpoint

            net, checkpoint = load_model(model)
            with tempfile.TemporaryDirectory() as folder:
                path = save_checkpoint(
                    os.path.join(folder, "model.pt"), net,
                    diameter=checkpoint.diameter, normalization=checkpoint.normalization,
                )
                data = open(path, "rb").read()
        return cls(data, hashlib.sha256(data).hexdigest())


def worker_model(payload: Any) -> Any:
    """The ``(UNet, Checkpoint)`` of a :class:`ModelPayload`, loaded once per process (other
    models pass through)."""
    if not isinstance(payload, ModelPayload):
        return payload
    cached = _WORKER_MODELS.get(payload.key)
    if cached is None:
        from napari_unet.engine.checkpoint import load_checkpoint

        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model.pt")
            with open(path, "wb") as f:
                f.write(payload.data)
            cached = load_checkpoint(path, device="cpu")
        _WORKER_MODELS.clear()  # keep one model per worker
        _WORKER_MODELS[payload.key] = cached
    return cached


def _block_task(region: np.ndarray, payload: Any, settings: BlockSettings, block: Block, shape) -> BlockLabels:
    import torch

    threads = os.environ.get("NAPARI_UNET_WORKER_THREADS")  # set by cluster.connect("local")
    if threads and torch.get_num_threads() != int(threads):
        torch.set_num_threads(int(threads))
    return segment_block(region, worker_model(payload), settings, block, shape)


# -------------------------------------------------------------------------------------
# the job: blocks, then stitching, then the lookup pass


def _run_blocks(planes, model, settings, blocks, shape, client) -> Iterator[tuple[Block, BlockLabels]]:
    """Segment ``blocks``; yields each with its labels as it finishes (any order)."""
    if client is None:
        net_and_meta = worker_model(model)
        for block in blocks:
            R0, R1, C0, C1 = block.region
            region = np.asarray(planes[block.plane, :, R0:R1, C0:C1].compute(scheduler="synchronous"))
            yield block, segment_block(region, net_and_meta, settings, block, shape)
        return
    import dask
    from distributed import as_completed

    payload = model if isinstance(model, ModelPayload) else ModelPayload.from_model(model)
    shipped = client.scatter(payload, broadcast=True, hash=False)
    tasks = []
    for block in blocks:
        R0, R1, C0, C1 = block.region
        region = planes[block.plane, :, R0:R1, C0:C1]
        tasks.append(dask.delayed(_block_task, pure=False)(region, shipped, settings, block, shape))
    futures = client.compute(tasks, retries=RETRIES)
    where = {f.key: b for f, b in zip(futures, blocks, strict=True)}
    try:
        for future in as_completed(futures):
            yield where[future.key], _block_result(future, where[future.key])
            future.release()
    finally:
        client.cancel(futures)


def _block_result(future, block: Block) -> BlockLabels:
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        raise RuntimeError(
            f"dask workers died {RETRIES + 1} times or more while segmenting block "
            f"{block.index} of plane {block.plane} (out of memory?); nothing was written"
        ) from None


def iter_segment_blockwise(
    image: Any,
    model: Any = None,
    *,
    out: Any = None,
    channel_axis: int | None = None,
    stack: bool = False,
    block_size: int | None = None,
    client: Any = None,
    diameter: float | None = None,
    device: str = "cpu",
    threshold: float = 0.5,
    min_size: int | None = None,
    tile_size: int | None = None,
    tta: bool = False,
) -> Generator[Any, None, BlockwiseResult]:
    """Segment ``image`` block by block; yields progress, returns a :class:`BlockwiseResult`.

    Parameters
    ----------
    image : array-like
        numpy, zarr or dask; the layouts of :func:`~napari_unet.engine.segment.iter_segment`
        (``channel_axis``, ``stack``). Read one block region at a time.
    model : see :func:`~napari_unet.engine.models.load_model`
    out : array-like or None
        Where the (Y, X) or (P, Y, X) uint32 labels go (a zarr array keeps them on disk); a
        new ndarray when ``None``. Written block by block with block ids, then rewritten with
        the final ids; its content is undefined when the job fails (callers write to a
        temporary store and move it into place, see :mod:`~napari_unet.engine.zarr_io`).
    block_size : int or None
        Side of a block's core in input pixels (rounded up to a multiple of ``2**depth``);
        :data:`DEFAULT_BLOCK` when ``None``.
    client : distributed.Client or None
        Run the blocks on this cluster's workers (each reads its block region itself from a
        lazily read input; the model is scattered once); ``None`` runs them here, one by one.
    diameter, device, threshold, min_size, tile_size, tta
        As for :func:`~napari_unet.engine.segment.iter_segment`; ``min_size=None`` with no
        known diameter means the fixed ``DEFAULT_MIN_SIZE`` (an adaptive size would differ
        between blocks).

    Yields
    ------
    Note
        The input was re-chunked.
    BlockDone
        After each block (in the order blocks finish).
    """
    import dask.array as da  # noqa: F401 - a clear ImportError early when dask is missing

    planes = as_dask_planes(image, channel_axis=channel_axis, stack=stack)
    settings, factor, measured = plan(
        planes, model, block_size=block_size, diameter=diameter, min_size=min_size,
        threshold=threshold, tile_size=tile_size, device=device, tta=tta,
    )
    planes, note = _planes_chunked(planes, settings.block_size)
    if note:
        yield Note(note)
    n_planes, _, rows, cols = planes.shape
    shape = (int(rows), int(cols))
    out_shape = (n_planes, rows, cols) if stack else (rows, cols)
    if out is None:
        out = np.zeros(out_shape, np.uint32)
    elif tuple(out.shape) != out_shape:
        raise ValueError(f"out has shape {tuple(out.shape)}, the labels need {out_shape}")
    view = _PlaneView(out, stack)
    blocks = [
        b for p in range(n_planes)
        for b in block_grid(shape, block_size=settings.block_size, halo=settings.halo, plane=p)
    ]
    order = {(b.plane, b.index): k for k, b in enumerate(blocks)}
    n_ids = np.zeros(len(blocks), np.int64)
    strips: dict[int, dict[str, np.ndarray]] = {}
    runner = model if client is not None else _loaded(model)
    for done, (block, result) in enumerate(_run_blocks(planes, runner, settings, blocks, shape, client), 1):
        k = order[(block.plane, block.index)]
        r0, r1, c0, c1 = block.core
        view[block.plane, r0:r1, c0:c1] = result.core
        n_ids[k] = result.n_ids
        strips[k] = result.strips
        yield BlockDone(done, len(blocks))

    offsets = np.concatenate([[0], np.cumsum(n_ids)[:-1]])
    lut, n_objects = _stitch(blocks, order, offsets, int(n_ids.sum()), strips)
    for k, block in enumerate(blocks):
        r0, r1, c0, c1 = block.core
        local = np.asarray(view[block.plane, r0:r1, c0:c1])
        view[block.plane, r0:r1, c0:c1] = np.where(local > 0, lut[local.astype(np.int64) + offsets[k]], 0)
    return BlockwiseResult(out, n_objects, measured, factor, len(blocks))


def _loaded(model: Any) -> Any:
    from napari_unet.engine.models import load_model

    return load_model(model, device="cpu")


class _PlaneView:
    """``out[p, ...]`` for a stack, ``out[...]`` for one plane."""

    def __init__(self, out: Any, stack: bool):
        self.out, self.stack = out, stack

    def __getitem__(self, key):
        return self.out[key] if self.stack else self.out[key[1:]]

    def __setitem__(self, key, value):
        if self.stack:
            self.out[key] = value
        else:
            self.out[key[1:]] = value


def _stitch(blocks, order, offsets, n_ids, strips) -> tuple[np.ndarray, int]:
    """The lookup table from global block ids to final ids (see :mod:`stitch`)."""
    from napari_unet.engine.stitch import match_strips, merge_map

    pairs = []
    for k, block in enumerate(blocks):
        i, j = block.index
        for face, other, their in (("bottom", (i + 1, j), "top"), ("right", (i, j + 1), "left")):
            if face not in strips[k]:
                continue
            m = order[(block.plane, other)]
            mine, theirs = strips[k][face], strips[m][their]
            a = np.where(mine > 0, mine.astype(np.int64) + offsets[k], 0)
            b = np.where(theirs > 0, theirs.astype(np.int64) + offsets[m], 0)
            pairs.append(match_strips(a, b))
    pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    return merge_map(n_ids, pairs, np.ones(n_ids + 1, bool))


def segment_blockwise(image: Any, model: Any = None, **kwargs: Any) -> Any:
    """:func:`iter_segment_blockwise` run to the end; returns the labels (``out`` when given)."""
    from napari_unet.engine.events import drive

    return drive(iter_segment_blockwise(image, model, **kwargs)).labels


def segment_dask(image: Any, model: Any = None, **kwargs: Any):
    """Segment a dask (or any) array lazily: returns a uint32 dask array of labels.

    Nothing runs until the result is computed (``.compute()``, ``.to_zarr()``, a napari layer
    showing it); then the whole block-wise job runs once, on the current dask scheduler (a
    ``distributed.Client``'s cluster when one is active), and every chunk of the result is a
    block's core. Keywords as :func:`iter_segment_blockwise` (``out`` and ``client`` excepted).
    Unlike :func:`iter_segment_blockwise` with a zarr ``out``, the labels of all blocks are held
    in the cluster's memory until the stitching is done (4 bytes per pixel).
    """
    import dask
    import dask.array as da

    for key in ("out", "client"):
        if key in kwargs:
            raise TypeError(f"segment_dask does not take {key!r}; use iter_segment_blockwise")
    stack = bool(kwargs.get("stack", False))
    planes = as_dask_planes(image, channel_axis=kwargs.get("channel_axis"), stack=stack)
    options = {k: v for k, v in kwargs.items() if k not in ("channel_axis", "stack")}
    settings, _, _ = plan(planes, model, **options)
    planes, _ = _planes_chunked(planes, settings.block_size)
    n_planes, _, rows, cols = planes.shape
    shape = (int(rows), int(cols))
    payload = ModelPayload.from_model(model)
    shipped = dask.delayed(payload, pure=True)
    grids = [
        block_grid(shape, block_size=settings.block_size, halo=settings.halo, plane=p)
        for p in range(n_planes)
    ]
    blocks = [b for grid in grids for b in grid]
    order = {(b.plane, b.index): k for k, b in enumerate(blocks)}
    results = []
    for block in blocks:
        R0, R1, C0, C1 = block.region
        region = planes[block.plane, :, R0:R1, C0:C1]
        results.append(dask.delayed(_block_task, pure=True)(region, shipped, settings, block, shape))
    table = dask.delayed(_lookup, pure=True)(results, blocks, order)
    n_rows = -(-rows // settings.block_size)
    n_cols = -(-cols // settings.block_size)
    plane_arrays = []
    for p, grid in enumerate(grids):
        rows_of_blocks = []
        for i in range(n_rows):
            row = []
            for j in range(n_cols):
                block = grid[i * n_cols + j]
                k = order[(p, (i, j))]
                r0, r1, c0, c1 = block.core
                chunk = dask.delayed(_final_chunk, pure=True)(results[k], table, k)
                row.append(da.from_delayed(chunk, shape=(r1 - r0, c1 - c0), dtype=np.uint32))
            rows_of_blocks.append(row)
        plane_arrays.append(da.block(rows_of_blocks))
    return da.stack(plane_arrays) if stack else plane_arrays[0]


def _lookup(results: list[BlockLabels], blocks: list[Block], order) -> tuple[np.ndarray, np.ndarray]:
    n_ids = np.array([r.n_ids for r in results], np.int64)
    offsets = np.concatenate([[0], np.cumsum(n_ids)[:-1]])
    lut, _ = _stitch(blocks, order, offsets, int(n_ids.sum()), {k: r.strips for k, r in enumerate(results)})
    return lut, offsets


def _final_chunk(result: BlockLabels, table: tuple[np.ndarray, np.ndarray], k: int) -> np.ndarray:
    lut, offsets = table
    local = result.core.astype(np.int64)
    return np.where(local > 0, lut[local + offsets[k]], 0).astype(np.uint32)

