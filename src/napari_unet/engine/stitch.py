"""Stitching the labels of neighbouring blocks: the same object seen by two blocks gets one id.

Block-wise segmentation (:mod:`~napari_unet.engine.blockwise`) labels every block with its own
ids, offset so that no id is used by two blocks. A cell that crosses the face between two blocks
then carries one id on each side. Both blocks segmented a halo beyond their core, so around the
face each has labelled the same pixels; there the two versions of that cell overlap almost
completely, while two different cells that merely touch share a few boundary pixels only.

:func:`match_strips` turns the overlaps in such a strip into pairs of ids that are one object,
:func:`merge_map` joins all pairs of the image with a connected-components pass over a sparse
graph (scipy) and returns a lookup table from block ids to final, consecutive ids. The graph has
one node per block id and one edge per matched pair, so it grows with the number of cells, not
pixels. Cellpose's distributed segmentation (``cellpose/contrib/distributed_segmentation.py``)
merges with the same kind of graph, linking labels that meet across block faces; its earlier
contributed version (cellpose PR #356) linked labels by their overlap in the shared border
region, as here, which keeps touching neighbours apart.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MATCH_FRACTION", "FaceMatcher", "apply_map", "drop_small", "match_strips", "merge_map"]

#: Two ids are one object when their overlap in a strip covers at least this fraction of the
#: smaller of the two within the strip.
MATCH_FRACTION = 0.5


def match_strips(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Pairs of ids that label the same object in two views of one strip.

    Parameters
    ----------
    first, second : (Y, X) integer arrays of the same shape
        The global ids two blocks gave the pixels of the strip they share; 0 is background.

    Returns
    -------
    (n, 2) int64
        ``(id in first, id in second)`` whose overlap covers at least :data:`MATCH_FRACTION`
        of the smaller of the two objects' pixels in the strip.
    """
    first = np.asarray(first, np.int64).reshape(-1)
    second = np.asarray(second, np.int64).reshape(-1)
    if first.shape != second.shape:
        raise ValueError(f"the two strips differ in size: {first.size} and {second.size}")
    both = (first > 0) & (second > 0)
    if not both.any():
        return np.zeros((0, 2), np.int64)
    ids_a, area_a = np.unique(first[first > 0], return_counts=True)
    ids_b, area_b = np.unique(second[second > 0], return_counts=True)
    pairs, overlap = np.unique(np.stack([first[both], second[both]], axis=1), axis=0, return_counts=True)
    size_a = area_a[np.searchsorted(ids_a, pairs[:, 0])]
    size_b = area_b[np.searchsorted(ids_b, pairs[:, 1])]
    keep = overlap >= MATCH_FRACTION * np.minimum(size_a, size_b)
    return pairs[keep]


def merge_map(n_ids: int, pairs: np.ndarray, used: np.ndarray) -> tuple[np.ndarray, int]:
    """A lookup table from block ids to final ids, joining matched pairs.

    Parameters
    ----------
    n_ids : int
        Block ids run from 1 to ``n_ids``; 0 is background.
    pairs : (n, 2) integer array
        Ids that are one object (from :func:`match_strips`), in any number and order.
    used : (n_ids + 1,) bool
        Which ids appear in the output; an object whose ids all stay unused gets no final id.

    Returns
    -------
    lut : (n_ids + 1,) uint32
        ``lut[block_id]`` is the final id: consecutive from 1, numbered in the order of each
        object's smallest block id; ``lut[0] == 0``.
    n_objects : int
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    size = int(n_ids) + 1
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    graph = coo_matrix(
        (np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(size, size)
    )
    _, component = connected_components(graph, directed=False)
    used = np.asarray(used, bool).copy()
    used[0] = False
    # a component is kept when any of its ids is used; its first id (ids ascend) names it
    live = np.zeros(component.max() + 1, bool)
    live[component[used]] = True
    first_id = np.full(component.max() + 1, size, np.int64)
    np.minimum.at(first_id, component, np.arange(size))
    order = np.argsort(first_id[live], kind="stable")
    final = np.zeros(component.max() + 1, np.uint32)
    final[np.flatnonzero(live)[order]] = np.arange(1, order.size + 1, dtype=np.uint32)
    lut = final[component]
    lut[0] = 0
    return lut, int(order.size)


def apply_map(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """``lut[labels]`` as uint32: block ids to final ids."""
    return np.asarray(lut, np.uint32)[np.asarray(labels)]


#: face of a block -> (step to the neighbour in block rows and columns, the neighbour's face)
_NEIGHBOURS = {
    "top": ((-1, 0), "bottom"),
    "bottom": ((1, 0), "top"),
    "left": ((0, -1), "right"),
    "right": ((0, 1), "left"),
}


class FaceMatcher:
    """Matches the face strips of neighbouring blocks as soon as both blocks are done, and
    drops them: the driver holds the strips of blocks whose neighbours are still running (in
    row order about one row of blocks), not of the whole image, plus the matched pairs (a few
    per cell that crosses a face).

    ``blocks``: every block of the job (:class:`~napari_unet.engine.block_plan.Block`: its
    ``plane`` and ``index``); ``order``: (plane, index) -> position in ``blocks``.
    """

    def __init__(self, blocks: list, order: dict) -> None:
        self.blocks, self.order = blocks, order
        self.waiting: dict[int, dict[str, np.ndarray]] = {}
        self.pairs: list[tuple[int, int, np.ndarray]] = []
        self.peak_bytes = 0

    def add(self, k: int, strips: dict[str, np.ndarray]) -> None:
        """Block ``k`` is done, with its face strips in block ids."""
        block = self.blocks[k]
        i, j = block.index
        left = {}
        for face, strip in strips.items():
            (di, dj), their = _NEIGHBOURS[face]
            m = self.order[(block.plane, (i + di, j + dj))]
            theirs = self.waiting.get(m, {}).pop(their, None)
            if theirs is None:
                left[face] = strip
                continue
            self.pairs.append((k, m, match_strips(strip, theirs)))
            if not self.waiting[m]:
                del self.waiting[m]
        if left:
            self.waiting[k] = left
        held = sum(a.nbytes for faces in self.waiting.values() for a in faces.values())
        self.peak_bytes = max(self.peak_bytes, held)

    def lookup(self, n_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Once every block is done: the lookup table from global block ids to final ids
        (:func:`merge_map`), the per-block id offsets, and the number of objects."""
        if self.waiting:
            raise RuntimeError(f"{len(self.waiting)} blocks still wait for a neighbour")
        offsets = np.concatenate([[0], np.cumsum(n_ids)[:-1]]).astype(np.int64)
        pairs = [p + [offsets[k], offsets[m]] for k, m, p in self.pairs if len(p)]
        pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
        total = int(np.sum(n_ids))
        lut, n_objects = merge_map(total, pairs, np.ones(total + 1, bool))
        return lut, offsets, n_objects


def drop_small(
    lut: np.ndarray, areas: np.ndarray, planes: np.ndarray, n_objects: int
) -> tuple[np.ndarray, int]:
    """``lut`` (:func:`merge_map`) without the objects smaller than ``min_size=None`` resolves
    for their plane in memory (:func:`~napari_unet.engine.instances.min_size_of_areas` of the
    areas of the plane's stitched objects).

    Parameters
    ----------
    lut : (n_ids + 1,) block id -> final id, 1..n_objects
    areas : (n_ids + 1,) pixels of each block id in its block's core (index 0 unused)
    planes : (n_ids + 1,) the plane of each block id
    n_objects : the number of final ids

    Returns
    -------
    (lut, n_objects) : the ids kept renumbered from 1, in the same order; dropped ones 0.

    A dropped object lying in a hole of another becomes background here; in memory, where
    holes are filled after the small objects are dropped, it becomes part of the other.
    """
    from napari_unet.engine.instances import min_size_of_areas

    used = lut > 0
    total = np.bincount(lut[used], weights=areas[used], minlength=n_objects + 1)
    total = np.rint(total).astype(np.int64)
    plane = np.full(n_objects + 1, -1, np.int64)
    plane[lut[used]] = planes[used]  # an object lies in one plane
    keep = np.zeros(n_objects + 1, bool)
    for p in np.unique(plane[1:]):
        ids = np.flatnonzero(plane == p)
        keep[ids] = total[ids] >= min_size_of_areas(total[ids])
    new = np.cumsum(keep) * keep
    return new[lut].astype(lut.dtype), int(keep.sum())
