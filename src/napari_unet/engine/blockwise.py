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
  sample the in-memory path uses (central crops of up to three planes); a block never measures anything of its own.

A block writes the labels of its core only, with ids of its own; the ids are made global by an
offset per block (in block order, so the result does not depend on the order blocks finish in)
and the objects that cross block faces are joined by :mod:`~napari_unet.engine.stitch`: both
neighbours label a strip of ``strip`` pixels on each side of their shared face, the ids that
overlap there are one object, and a connected-components pass over those pairs gives a lookup
table that a last pass applies to every block. StarDist's ``predict_instances_big`` (blocks with
context, each block keeping the objects it is responsible for) and Cellpose's
``distributed_segmentation`` (unique ids per block, a graph over block faces) are the designs
this follows; docs/scaleout.md compares them.

Memory: one block (image region, float32 copy, probabilities, labels) per worker; on the
driver, the face strips (``strip * block_size`` ids per face) of the blocks whose neighbours
are not done yet (:class:`~napari_unet.engine.stitch.FaceMatcher` matches a face as soon as both sides are done and drops
it: about one row of blocks when blocks finish in order), the matched pairs and the lookup
table (one entry per block id). Only the output array grows with the number of pixels, and it
may live on disk (a zarr array). :func:`iter_segment_blockwise` runs the blocks in this process or, given a
``dask.distributed`` client, on its workers (the model is scattered to every worker once);
:func:`segment_dask` returns a lazy dask array instead.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_unet.engine.block_plan import (
    DEFAULT_BLOCK,
    HALO_DIAMETERS,
    Block,
    BlockSettings,
    _planes_chunked,
    as_dask_planes,
    block_grid,
    plan,
    plane_axes_shape,
)
from napari_unet.engine.events import BlockDone, Note
from napari_unet.engine.label_step import SEED_THRESHOLD
from napari_unet.engine.stitch import FaceMatcher
from napari_unet.engine.worker_models import MAX_WORKER_MODELS, ModelPayload, worker_model  # noqa: F401

__all__ = [
    "DEFAULT_BLOCK",
    "HALO_DIAMETERS",
    "Block",
    "BlockSettings",
    "BlockwiseResult",
    "ModelPayload",
    "as_dask_planes",
    "block_grid",
    "iter_segment_blockwise",
    "plan",
    "segment_blockwise",
    "segment_dask",
    "worker_model",
]

#: Blocks may retry this many times on a cluster (a worker that died, a lost connection).
RETRIES = 2


@dataclass(frozen=True, eq=False)
class BlockLabels:
    """What one block hands back: its core's labels in block ids 1..n (uint32), the strips
    along its faces that have a neighbour (``"top"``, ``"bottom"``, ``"left"``, ``"right"``),
    and ``areas``: (n + 1,) int64 pixels of each block id in the core (0: background)."""

    core: np.ndarray
    n_ids: int
    strips: dict[str, np.ndarray]
    areas: np.ndarray


@dataclass(frozen=True, eq=False)
class BlockwiseResult:
    """What :func:`iter_segment_blockwise` returns.

    Attributes
    ----------
    labels : (Y, X), (P, Y, X) or (T, Z, Y, X) uint32 array-like (the image's plane axes)
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
    R0, _, C0, _ = block.region
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
                # None: every object; the small ones are dropped over the stitched plane
                min_size=0 if settings.min_size is None else settings.min_size,
                min_confidence=settings.min_confidence,
                background_threshold=settings.background_threshold,
                tile_size=settings.tile_size,
                tta=settings.tta,
                intensity_range=(low, high),
                region=(shape, (R0, C0)),  # rescaled on the plane's grid, as the whole plane
            )
        )
    labels = result.labels
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
    core = local[core]
    return BlockLabels(core, int(ids.size), strips, np.bincount(core.ravel(), minlength=ids.size + 1))


# -------------------------------------------------------------------------------------
# a block as a task (the model on workers: :mod:`~napari_unet.engine.worker_models`)


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
    threshold: float = SEED_THRESHOLD,
    min_size: int | None = None,
    min_confidence: float | None = None,
    background_threshold: float | None = None,
    tile_size: int | None = None,
    tta: bool = False,
    intensity_range: tuple[Any, Any] | None = None,
) -> Generator[Any, None, BlockwiseResult]:
    """Segment ``image`` block by block; yields progress, returns a :class:`BlockwiseResult`.

    Parameters
    ----------
    image : array-like
        numpy, zarr or dask; the layouts of :func:`~napari_unet.engine.segment.iter_segment`
        (``channel_axis``, ``stack``), and with ``stack`` also more than one plane axis before
        Y and X (``(T, Z, Y, X)``: T x Z planes, in order). Read one block region at a time.
    model : see :func:`~napari_unet.engine.models.load_model`
    out : array-like or None
        Where the uint32 labels go (a zarr array keeps them on disk): (Y, X), or with
        ``stack`` the image's plane axes and (Y, X) (``(P, Y, X)``, ``(T, Z, Y, X)``); a
        new ndarray when ``None``. Written block by block with block ids, then rewritten with
        the final ids; its content is undefined when the job fails (callers write to a
        temporary store and move it into place, see :mod:`~napari_unet.engine.zarr_io`).
    block_size : int or None
        Side of a block's core in input pixels (rounded up to a multiple of ``2**depth``);
        :data:`DEFAULT_BLOCK` when ``None``.
    client : distributed.Client or None
        Run the blocks on this cluster's workers (each reads its block region itself from a
        lazily read input; the model is scattered once); ``None`` runs them here, one by one.
    diameter, device, threshold, min_size, min_confidence, background_threshold, tile_size, tta
        As for :func:`~napari_unet.engine.segment.iter_segment`; ``min_size=None`` with no
        known diameter is resolved as in memory, from the median area of each whole plane's
        objects (:func:`~napari_unet.engine.instances.resolve_min_size`), once the blocks are
        stitched (:func:`~napari_unet.engine.stitch.drop_small`).
    intensity_range : (low, high) or None
        As for :func:`~napari_unet.engine.segment.iter_segment`, for every plane; ``None``
        measures the model's percentiles over each whole plane.

    Yields
    ------
    Note
        The input was re-chunked.
    BlockDone
        After each block (in the order blocks finish).
    """
    import dask.array as da  # noqa: F401 - a clear ImportError early when dask is missing

    planes = as_dask_planes(image, channel_axis=channel_axis, stack=stack)
    lead = plane_axes_shape(image, channel_axis=channel_axis, stack=stack)
    settings, factor, measured = plan(
        planes, model, block_size=block_size, diameter=diameter, min_size=min_size,
        threshold=threshold, min_confidence=min_confidence,
        background_threshold=background_threshold, tile_size=tile_size, device=device, tta=tta,
        intensity_range=intensity_range,
    )
    planes, note = _planes_chunked(planes, settings.block_size)
    if note:
        yield Note(note)
    n_planes, _, rows, cols = planes.shape
    shape = (int(rows), int(cols))
    out_shape = (*lead, rows, cols)
    if out is None:
        out = np.zeros(out_shape, np.uint32)
    elif tuple(out.shape) != out_shape:
        raise ValueError(f"out has shape {tuple(out.shape)}, the labels need {out_shape}")
    view = _PlaneView(out, lead)
    blocks = [
        b for p in range(n_planes)
        for b in block_grid(shape, block_size=settings.block_size, halo=settings.halo, plane=p)
    ]
    order = {(b.plane, b.index): k for k, b in enumerate(blocks)}
    n_ids = np.zeros(len(blocks), np.int64)
    areas: list[np.ndarray] = [np.zeros(1, np.int64)] * len(blocks)
    faces = FaceMatcher(blocks, order)
    runner = model if client is not None else _loaded(model)
    for done, (block, result) in enumerate(_run_blocks(planes, runner, settings, blocks, shape, client), 1):
        k = order[(block.plane, block.index)]
        r0, r1, c0, c1 = block.core
        view[block.plane, r0:r1, c0:c1] = result.core
        n_ids[k] = result.n_ids
        areas[k] = result.areas
        faces.add(k, result.strips)
        yield BlockDone(done, len(blocks))

    lut, offsets, n_objects = faces.lookup(n_ids)
    if settings.min_size is None:
        lut, n_objects = _drop_small(lut, n_objects, areas, blocks)
    for k, block in enumerate(blocks):
        r0, r1, c0, c1 = block.core
        local = np.asarray(view[block.plane, r0:r1, c0:c1])
        view[block.plane, r0:r1, c0:c1] = np.where(local > 0, lut[local.astype(np.int64) + offsets[k]], 0)
    return BlockwiseResult(out, n_objects, measured, factor, len(blocks))


def _loaded(model: Any) -> Any:
    from napari_unet.engine.models import load_model

    return load_model(model, device="cpu")


class _PlaneView:
    """``out[plane, rows, cols]`` by the engine's plane number: ``out[rows, cols]`` for one
    plane (``lead`` is ``()``), ``out[p, ...]`` for a stack, ``out[t, z, ...]`` for plane
    ``t * Z + z`` of a (T, Z, Y, X) one."""

    def __init__(self, out: Any, lead: tuple[int, ...]):
        self.out, self.lead = out, tuple(lead)

    def _key(self, key):
        plane, *rest = key
        where = tuple(int(i) for i in np.unravel_index(plane, self.lead)) if self.lead else ()
        return (*where, *rest)

    def __getitem__(self, key):
        return self.out[self._key(key)]

    def __setitem__(self, key, value):
        self.out[self._key(key)] = value


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
    lead = plane_axes_shape(image, channel_axis=kwargs.get("channel_axis"), stack=stack)
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
    table = dask.delayed(_lookup, pure=True)(results, blocks, order, settings.min_size is None)
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
    return da.stack(plane_arrays).reshape((*lead, rows, cols)) if stack else plane_arrays[0]


def _lookup(
    results: list[BlockLabels], blocks: list[Block], order, drop: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    faces = FaceMatcher(blocks, order)
    for k, r in enumerate(results):
        faces.add(k, r.strips)
    lut, offsets, n_objects = faces.lookup(np.array([r.n_ids for r in results], np.int64))
    if drop:
        lut, _ = _drop_small(lut, n_objects, [r.areas for r in results], blocks)
    return lut, offsets


def _drop_small(
    lut: np.ndarray, n_objects: int, areas: list[np.ndarray], blocks: list[Block]
) -> tuple[np.ndarray, int]:
    """:func:`~napari_unet.engine.stitch.drop_small` with the blocks' areas (``areas[k]``:
    (n_ids + 1,) of block ``k``, in the order of ``blocks`` and of the lookup's offsets)."""
    from napari_unet.engine.stitch import drop_small

    # global block ids run block after block, from 1 (FaceMatcher.lookup's offsets)
    per_id = np.concatenate([[0]] + [a[1:] for a in areas]).astype(np.int64)
    planes = np.concatenate([[0]] + [np.full(len(a) - 1, b.plane) for a, b in zip(areas, blocks, strict=True)])
    return drop_small(lut, per_id, planes.astype(np.int64), n_objects)


def _final_chunk(result: BlockLabels, table: tuple[np.ndarray, np.ndarray], k: int) -> np.ndarray:
    lut, offsets = table
    local = result.core.astype(np.int64)
    return np.where(local > 0, lut[local + offsets[k]], 0).astype(np.uint32)

