"""Block-wise segmentation against the in-memory path, stitching, dask arrays and clusters.

The bundled model on a small synthetic image whose nuclei (24 px, the model's training
diameter) cross the faces of 128-pixel blocks; the in-memory result is computed once per module.
"""

from __future__ import annotations

import os
import signal
import socket
import time

import numpy as np
import pytest
import torch

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

import dask.array as da  # noqa: E402

from napari_unet.engine import blockwise  # noqa: E402
from napari_unet.engine.blockwise import (  # noqa: E402
    block_grid,
    iter_segment_blockwise,
    segment_blockwise,
    segment_dask,
)
from napari_unet.engine.events import BlockDone, Note, drive  # noqa: E402
from napari_unet.engine.stitch import match_strips, merge_map  # noqa: E402

BLOCK = 128
DIAMETER = 24.0


def matched_ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For every object of ``a``, the IoU with the object of ``b`` it overlaps most (0: none)."""
    out = []
    for i in np.unique(a[a > 0]):
        mask = a == i
        ids, counts = np.unique(b[mask], return_counts=True)
        counts, ids = counts[ids > 0], ids[ids > 0]
        if ids.size == 0:
            out.append(0.0)
            continue
        other = b == ids[np.argmax(counts)]
        out.append((mask & other).sum() / (mask | other).sum())
    return np.asarray(out)


def assert_same_objects(a: np.ndarray, b: np.ndarray) -> None:
    assert a.max() > 0 and b.max() > 0
    assert len(np.unique(a[a > 0])) == len(np.unique(b[b > 0]))
    assert matched_ious(a, b).min() >= 0.9
    assert matched_ious(b, a).min() >= 0.9


@pytest.fixture(scope="module")
def image():
    """(320, 352) uint16 nuclei of 24 px; the right 64 columns hold background only (a block
    normalised on its own would stretch the noise there into objects)."""
    from napari_unet.engine.synthetic import synthetic_nuclei

    torch.set_num_threads(1)
    img, _ = synthetic_nuclei((320, 352), n_cells=140, diameter=DIAMETER, rng=3)
    img[:, -64:] = np.median(img[:16, -64:])
    return img


@pytest.fixture(scope="module")
def reference(image):
    from napari_unet.engine.segment import segment

    return segment(image, diameter=DIAMETER, device="cpu")


def crossing(labels: np.ndarray, block: int) -> int:
    """How many objects have pixels on both sides of a block face."""
    ids = set()
    for face in range(block, labels.shape[0], block):
        a, b = labels[face - 1], labels[face]
        ids |= set(np.unique(a[(a == b) & (a > 0)]))
    for face in range(block, labels.shape[1], block):
        a, b = labels[:, face - 1], labels[:, face]
        ids |= set(np.unique(a[(a == b) & (a > 0)]))
    return len(ids)


def test_blockwise_equals_in_memory(image, reference):
    assert crossing(reference, BLOCK) >= 10  # the test means something: objects cross faces
    events = []
    result = drive(
        iter_segment_blockwise(image, "default", block_size=BLOCK, diameter=DIAMETER),
        events.append,
    )
    labels = result.labels
    assert labels.dtype == np.uint32 and labels.shape == image.shape
    assert result.n_blocks == 9 and result.n_objects == len(np.unique(labels)) - 1
    assert [e.done for e in events if isinstance(e, BlockDone)] == list(range(1, 10))
    assert_same_objects(reference, labels)
    # ids are consecutive from 1
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))


def test_blocks_take_the_outline_threshold(image):
    from napari_unet.engine.segment import segment

    tight = segment(image, diameter=DIAMETER, device="cpu", background_threshold=0.2)
    blocks = drive(
        iter_segment_blockwise(
            image, "default", block_size=BLOCK, diameter=DIAMETER, background_threshold=0.2
        )
    ).labels
    assert_same_objects(tight, blocks)
    assert (blocks > 0).sum() < (segment(image, diameter=DIAMETER, device="cpu") > 0).sum()


def test_blocks_use_the_whole_image_percentiles(image, reference, monkeypatch):
    """Each block normalised by percentiles of its own would find objects in the empty band
    (and change the rest); the planner measures them once for the whole plane."""
    from napari_unet.engine.normalization import percentile_range

    seen = []
    original = blockwise.segment_block

    def spy(region, model, settings, block, shape):
        seen.append(settings.intensity_range[0])
        return original(region, model, settings, block, shape)

    monkeypatch.setattr(blockwise, "segment_block", spy)
    labels = segment_blockwise(image, "default", block_size=BLOCK, diameter=DIAMETER)
    lo, hi = percentile_range(image, low=1.0, high=99.8)
    assert all(np.allclose(s, (lo, hi)) for s in seen) and len(seen) == 9
    assert labels[:, -48:].max() == 0 and reference[:, -48:].max() == 0


def test_a_blank_plane_is_segmented_like_in_memory(image):
    """A blank plane (a stack's empty first slice, or an image whose 1st and 99.8th
    percentiles are both 0: a few cells on a black field) has an empty intensity range: block by
    block it was refused with 'intensity_range: low must be below high, not (0.0,) and (0.0,)',
    while the in-memory path maps it to 0 and segments it. It is segmented now."""
    from napari_unet.engine.segment import segment

    stack = np.stack([np.full((128, 128), 100, np.uint16), image[:128, :128]])
    labels = segment_blockwise(stack, "default", stack=True, block_size=BLOCK, diameter=DIAMETER)
    assert labels[0].max() == 0 and labels[1].max() > 0
    sparse = np.zeros((256, 256), np.uint16)
    sparse[100:112, 100:110] = 900  # 0.2 % of the plane: both percentiles are 0
    blocks = segment_blockwise(sparse, "default", block_size=BLOCK, diameter=DIAMETER)
    np.testing.assert_array_equal(blocks > 0, segment(sparse, diameter=DIAMETER) > 0)


def test_blocks_use_a_given_intensity_range(image, monkeypatch):
    """A given (low, high) replaces the measured percentiles in every block, and in the
    diameter estimate's crop."""
    from napari_unet.engine import block_plan

    seen, estimate_ranges = [], []
    original = blockwise.segment_block

    def spy(region, model, settings, block, shape):
        seen.append(settings.intensity_range[0])
        return original(region, model, settings, block, shape)

    real_estimate = block_plan._estimate_diameter

    def estimate_spy(*args, **kwargs):
        estimate_ranges.append(kwargs.get("intensity_range"))
        return real_estimate(*args, **kwargs)

    monkeypatch.setattr(blockwise, "segment_block", spy)
    monkeypatch.setattr(block_plan, "_estimate_diameter", estimate_spy)
    segment_blockwise(image, "default", block_size=BLOCK, intensity_range=(50, 900))
    assert seen and all(s == ((50.0,), (900.0,)) for s in seen)
    assert estimate_ranges == [(50, 900)]


def test_estimated_diameter_is_measured_once(image, monkeypatch):
    from napari_unet.engine import block_plan

    calls = []
    original = block_plan._estimate_diameter

    def count(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(block_plan, "_estimate_diameter", count)
    result = drive(iter_segment_blockwise(image[:160, :160], "default", block_size=BLOCK))
    assert calls == [1] and result.diameter is not None and 15 < result.diameter < 35


def test_block_grid_covers_the_plane_once():
    blocks = block_grid((300, 260), block_size=128, halo=32)
    cover = np.zeros((300, 260), int)
    for b in blocks:
        r0, r1, c0, c1 = b.core
        cover[r0:r1, c0:c1] += 1
        R0, R1, _, C1 = b.region
        assert R0 == max(r0 - 32, 0) and R1 == min(r1 + 32, 300) and C1 == min(c1 + 32, 260)
    assert (cover == 1).all() and len(blocks) == 9


def test_match_strips_joins_one_object_not_touching_neighbours():
    first = np.zeros((8, 8), int)
    second = np.zeros((8, 8), int)
    first[1:5, 1:5] = 3  # the same cell seen by both blocks, one pixel shifted
    second[1:5, 2:6] = 7
    first[5:8, 0:4] = 4  # two different cells that touch along a row
    second[4:5, 0:1] = 9
    second[6:8, 5:8] = 11  # seen by one block only
    pairs = match_strips(first, second)
    assert pairs.tolist() == [[3, 7]]


def test_merge_map_joins_chains_and_numbers_by_first_id():
    pairs = np.array([[5, 2], [2, 9], [7, 8]])
    used = np.ones(10, bool)
    used[8] = used[7] = False  # an object whose ids never reach the output
    lut, n = merge_map(9, pairs, used)
    assert lut[0] == 0 and n == 5
    assert lut[2] == lut[5] == lut[9] == 2  # ids 1, {2,5,9}, 3, 4, 6 -> 1..5
    assert lut[1] == 1 and lut[3] == 3 and lut[4] == 4 and lut[6] == 5
    assert lut[7] == lut[8] == 0


def test_dask_array_in_lazy_dask_array_out(image, reference):
    import napari_unet

    lazy = da.from_array(image, chunks=(160, 176))
    calls = []
    original = blockwise.segment_block

    def count(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(blockwise, "segment_block", count)
        out = napari_unet.segment(lazy, block_size=BLOCK, diameter=DIAMETER)
        assert isinstance(out, da.Array) and out.dtype == np.uint32 and out.shape == image.shape
        assert calls == []  # nothing segmented yet
        labels = out.compute(scheduler="synchronous")
    assert len(calls) == 9
    assert_same_objects(reference, labels)
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))


def test_segment_dask_stack_has_ids_unique_across_planes(image):
    stack = da.from_array(np.stack([image[:160, :160], image[160:, :160]]), chunks=(1, 160, 160))
    labels = segment_dask(stack, stack=True, block_size=BLOCK, diameter=DIAMETER).compute(scheduler="synchronous")
    first, second = set(np.unique(labels[0])) - {0}, set(np.unique(labels[1])) - {0}
    assert first and second and not first & second


def test_small_chunks_are_rechunked_with_a_note(image):
    lazy = da.from_array(image[:160, :160], chunks=(16, 16))
    events = []
    drive(iter_segment_blockwise(lazy, block_size=BLOCK, diameter=DIAMETER), events.append)
    notes = [e.message for e in events if isinstance(e, Note)]
    assert len(notes) == 1 and "16 x 16" in notes[0]


def test_threaded_local_cluster_with_two_workers(image, reference):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        labels = segment_blockwise(image, "default", block_size=BLOCK, diameter=DIAMETER, client=client)
    assert_same_objects(reference, labels)


@pytest.mark.slow
def test_worker_processes_survive_a_killed_worker(image, reference):
    """Two worker processes; one is killed (SIGKILL) after the first block: its blocks are
    computed again on the other worker (or on its restarted self) and the result is the same."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=50) as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)
        gen = iter_segment_blockwise(image, "default", block_size=BLOCK, diameter=DIAMETER, client=client)
        killed = False

        def kill_one(event):
            nonlocal killed
            if isinstance(event, BlockDone) and not killed:
                os.kill(next(iter(pids.values())), signal.SIGKILL)
                killed = True

        result = drive(gen, kill_one)
    assert killed
    assert_same_objects(reference, result.labels)


def test_a_block_that_keeps_killing_workers_fails_clearly(monkeypatch):
    """KilledWorker (the block's retries spent) becomes one sentence naming the block."""
    from distributed import KilledWorker

    class Dead:
        def result(self):
            raise KilledWorker("task", "worker", 3)

    block = blockwise.Block(0, (1, 2), (0, 1, 0, 1), (0, 1, 0, 1))
    with pytest.raises(RuntimeError, match=r"block \(1, 2\).*nothing was written"):
        blockwise._block_result(Dead(), block)


def test_unreachable_scheduler_is_reported_quickly():
    from napari_unet.engine.cluster import connect

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    start = time.monotonic()
    with pytest.raises(ConnectionError, match="cannot reach the dask scheduler"), \
            connect(f"tcp://127.0.0.1:{port}", timeout=2):
        pass
    assert time.monotonic() - start < 15


def test_model_is_loaded_once_per_worker_thread(monkeypatch):
    from napari_unet.engine import checkpoint_read

    payload = blockwise.ModelPayload.from_model("default")
    loads = []
    original = checkpoint_read.load_checkpoint

    def count(*args, **kwargs):
        loads.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(checkpoint_read, "load_checkpoint", count)
    from napari_unet.engine import worker_models

    monkeypatch.setattr(worker_models, "_WORKER_MODELS", {})
    first = blockwise.worker_model(payload)
    second = blockwise.worker_model(payload)
    assert first is second and loads == [1]
    # another thread of the same worker gets a network of its own
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        other = pool.submit(blockwise.worker_model, payload).result()
    assert other[0] is not first[0] and loads == [1, 1]


def same_up_to_numbering(a: np.ndarray, b: np.ndarray) -> bool:
    """True when ``a`` and ``b`` are the same partition: one id of ``b`` for each id of ``a``."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


@pytest.mark.parametrize(("diameter", "block"), [(16.0, BLOCK), (11.0, 96), (31.0, BLOCK)])
def test_rescaled_blocks_equal_the_whole_image(diameter, block):
    """Cells of 11-31 px, the model's 24: every block is rescaled on the whole plane's pixel
    grid, normalised by the whole plane's percentiles and tiled in step with its pooling, so the
    labels are the in-memory labels, pixel for pixel, up to numbering."""
    from napari_unet.engine.segment import segment
    from napari_unet.engine.synthetic import synthetic_nuclei

    n_cells = int(200 * (16.0 / diameter) ** 2)
    img, _ = synthetic_nuclei((320, 320), n_cells=n_cells, diameter=diameter, rng=4)
    reference = segment(img, device="cpu", diameter=diameter)
    labels = segment_blockwise(img, block_size=block, diameter=diameter)
    assert crossing(reference, block) >= 5
    assert reference.max() > 10 and same_up_to_numbering(reference, labels)


def test_connect_refuses_bad_worker_counts():
    from napari_unet.engine.cluster import connect

    with pytest.raises(ValueError, match="at least 1"), connect("local", workers=0):
        pass
    with pytest.raises(ValueError, match="brings its own workers"), connect("tcp://127.0.0.1:9", workers=2):
        pass


def test_face_matcher_holds_about_one_row_of_strips_and_ignores_finishing_order():
    """Strips are matched as soon as both neighbours are done and then dropped: in row order the
    driver holds about one row of blocks' strips, and any finishing order gives the same table."""
    from napari_unet.engine.blockwise import _strip_bounds
    from napari_unet.engine.stitch import FaceMatcher

    rng = np.random.default_rng(0)
    shape, size, strip = (480, 600), 60, 8
    truth = np.zeros(shape, np.int64)
    n = 0
    for r in range(2, 440, 40):  # separate squares, many crossing faces
        for c in range(2, 560, 40):
            n += 1
            dr, dc = rng.integers(0, 8, 2)
            truth[r + dr : r + dr + 30, c + dc : c + dc + 30] = n
    blocks = block_grid(shape, block_size=size, halo=16)
    order = {(b.plane, b.index): k for k, b in enumerate(blocks)}
    cores, strips, n_ids = [], [], []
    for block in blocks:  # block ids: the truth's ids present in the core, renumbered
        r0, r1, c0, c1 = block.core
        ids = np.unique(truth[r0:r1, c0:c1])
        ids = ids[ids > 0]
        local = np.zeros(truth.max() + 1, np.uint32)
        local[ids] = np.arange(1, ids.size + 1)
        cores.append(local[truth[r0:r1, c0:c1]])
        strips.append({face: local[truth[a:b, c:d]] for face, (a, b, c, d) in _strip_bounds(block, shape, strip).items()})
        n_ids.append(ids.size)
    n_ids = np.asarray(n_ids)

    def stitched(sequence):
        faces = FaceMatcher(blocks, order)
        for k in sequence:
            faces.add(k, strips[k])
        lut, offsets, n = faces.lookup(n_ids)
        out = np.zeros(shape, np.int64)
        for k, block in enumerate(blocks):
            r0, r1, c0, c1 = block.core
            out[r0:r1, c0:c1] = np.where(cores[k] > 0, lut[cores[k].astype(np.int64) + offsets[k]], 0)
        return out, n, faces.peak_bytes

    in_order, n, peak = stitched(range(len(blocks)))
    shuffled, n2, _ = stitched(rng.permutation(len(blocks)))
    assert n == n2 == len(np.unique(truth)) - 1
    assert same_up_to_numbering(in_order, truth) and same_up_to_numbering(shuffled, truth)
    n_cols = -(-shape[1] // size)
    face = 2 * strip * size * 4  # bytes of one face strip: +-strip pixels, uint32
    assert peak <= (n_cols + 1) * face  # a row of bottom faces and one right face
    assert len(blocks) >= 8 * n_cols  # holding every block's strips would be 8x more
    partial = FaceMatcher(blocks, order)
    partial.add(0, strips[0])
    with pytest.raises(RuntimeError, match="still wait"):
        partial.lookup(n_ids)


def test_a_stack_of_two_plane_axes_is_segmented_as_its_planes(image):
    """A (T, Z, Y, X) stack was refused ('the image has 4 dimensions, which is not a stack of
    planes'); it is its T x Z planes in order, and the labels keep its axes, as in memory."""
    planes = np.stack([np.roll(image[:128, :160], 9 * k, axis=1) for k in range(4)])
    tz = planes.reshape(2, 2, 128, 160)
    flat = segment_blockwise(planes, "default", stack=True, block_size=BLOCK, diameter=DIAMETER)
    labels = segment_blockwise(tz, "default", stack=True, block_size=BLOCK, diameter=DIAMETER)
    assert labels.shape == (2, 2, 128, 160) and labels.max() > 0
    np.testing.assert_array_equal(labels, flat.reshape(tz.shape))
    # channels too: (T, Z, C, Y, X) with the channel axis given
    with_channel = segment_blockwise(
        tz[:, :, np.newaxis], "default", stack=True, channel_axis=2, block_size=BLOCK, diameter=DIAMETER
    )
    np.testing.assert_array_equal(with_channel, labels)
    lazy = segment_dask(da.from_array(tz, chunks=(1, 1, 128, 160)), stack=True, block_size=BLOCK, diameter=DIAMETER)
    assert lazy.shape == tz.shape
    np.testing.assert_array_equal(lazy.compute(scheduler="synchronous"), labels)


def test_a_model_without_a_training_diameter_drops_small_objects_as_in_memory():
    """With no diameter known, ``min_size=None`` is 5 % of the plane's median object area (at
    least 10 px) in memory (``instances.resolve_min_size``); the blocks resolve it over the
    whole plane too, not with a fixed 10 px: specks of ~21 px among 30 px nuclei (median ~600
    px, so 31 px) are dropped by both, and the labels are the same objects, plane by plane."""
    from napari_unet.engine.instances import min_size_of_areas
    from napari_unet.engine.models import load_model
    from napari_unet.engine.segment import segment
    from napari_unet.engine.synthetic import synthetic_nuclei

    net, _ = load_model("default")  # a bare network: no training diameter
    img, truth = synthetic_nuclei((256, 256), n_cells=40, diameter=30.0, rng=5)
    img = img.astype(np.float32)
    yy, xx = np.mgrid[:256, :256]
    specks = 0
    for r, c in [(y, x) for y in range(8, 256, 23) for x in range(8, 256, 23)][::6]:
        if not truth[(yy - r) ** 2 + (xx - c) ** 2 <= 40].any():
            img[(yy - r) ** 2 + (xx - c) ** 2 <= 5] = np.median(img[truth > 0])
            specks += 1
    assert specks >= 8
    stack = np.stack([img, img[::-1]])
    reference = segment(stack, net, stack=True, device="cpu")
    labels = segment_blockwise(stack, net, stack=True, block_size=BLOCK)
    areas = np.bincount(reference[0].ravel())[1:]
    assert min_size_of_areas(areas[areas > 0]) > 21  # the test means something: specks go
    for p in range(2):
        assert crossing(reference[p], BLOCK) >= 3
        assert same_up_to_numbering(reference[p], labels[p])
    assert np.array_equal(np.unique(labels), np.arange(labels.max() + 1))  # consecutive ids
    lazily = segment_dask(da.from_array(stack), net, stack=True, block_size=BLOCK)
    assert np.array_equal(lazily.compute(), labels)
