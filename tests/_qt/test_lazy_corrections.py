"""Lazy labels on the GUI thread: Fine-tune's painted plane, *Correct this result* of a
block-wise (zarr) result and a split of its copy read the plane on screen only; the copy is made
in a worker, chunk by chunk, into a new store."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
zarr = pytest.importorskip("zarr")

from napari_unet._qt._annotations import painted_plane  # noqa: E402
from napari_unet._qt._correction_layers import original_of  # noqa: E402
from napari_unet._qt.segment_widget import SegmentWidget  # noqa: E402

SHAPE = (3, 32, 32)


def _cells() -> np.ndarray:
    """(3, 32, 32) uint32 labels: two squares on plane 1, one on plane 2, none on plane 0."""
    labels = np.zeros(SHAPE, np.uint32)
    labels[1, 4:12, 4:12], labels[1, 18:26, 18:26], labels[2, 8:16, 8:16] = 1, 2, 3
    return labels


def _counted(array, reads, gate=None):
    """``array`` as a dask array of one chunk per plane whose reads append their plane to
    ``reads`` (after ``gate`` is set, when given)."""

    def read(block, block_info=None):
        if gate is not None:
            assert gate.wait(20), "the test never opened the gate"
        reads.append(block_info[0]["array-location"][0][0])
        return block

    chunks = (1, *array.shape[1:])
    return da.from_array(array, chunks=chunks).map_blocks(read, dtype=array.dtype)


def _on_plane(viewer, plane):
    viewer.dims.current_step = (plane, *viewer.dims.current_step[1:])


def test_an_empty_plane_of_lazy_painted_cells_reads_that_plane_only(make_napari_viewer):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.random.default_rng(0).random(SHAPE, np.float32), name="img")
    reads: list[int] = []
    labels = viewer.add_labels(_counted(_cells(), reads), name="painted")
    _on_plane(viewer, 0)
    reads.clear()
    with pytest.raises(ValueError, match="no painted cells in 'painted' on plane \\(0,\\)"):
        painted_plane(viewer, image, labels, None)
    assert set(reads) == {0}  # the other planes, maybe larger than memory, are not read


def _corrected(viewer, tmp_path, wait_job, reads=None):
    """:func:`_lazy_result` with its gate open, and *Correct this result* done: returns the
    panel, the result layer and the correction tools."""
    gate = threading.Event()
    gate.set()
    panel, _, result = _lazy_result(viewer, tmp_path, [] if reads is None else reads, gate)
    tools = panel.corrections
    tools.correct()
    wait_job(tools.copy_job)
    return panel, result, tools


def _lazy_result(viewer, tmp_path, reads, gate):
    """A Segment panel whose last result is a block-wise one: ``<image> labels`` showing a
    zarr store of :func:`_cells`, read through :func:`_counted`."""
    from napari_unet._qt._layers import geometry_of, put_layer, source_key
    from napari_unet.engine.zarr_io import LabelStore

    image = viewer.add_image(np.random.default_rng(0).random(SHAPE, np.float32), name="img")
    with LabelStore(tmp_path / "img_labels.zarr", SHAPE, chunks=(1, 32, 32)) as store:
        store.array[:] = _cells()
        path = store.commit()
    stored = zarr.open_group(str(path), mode="r")["0"]
    result = put_layer(  # as _lazy.show_lazy_labels shows a store, but read through a counter
        viewer,
        _counted(stored, reads, gate),
        kind="labels",
        name="img labels",
        key=f"segment:labels:{source_key(image)}",
        role="segment",
        geometry=geometry_of(image, 3),
    )
    result.metadata["store"] = str(path)
    panel = SegmentWidget(viewer)
    panel.labels_layer, panel.labels_image = result, image
    return panel, image, result


def test_correcting_a_block_wise_result_copies_it_in_a_worker_into_a_store(
    make_napari_viewer, qtbot, wait_job, errors, tmp_path
):
    viewer = make_napari_viewer()
    reads: list[int] = []
    gate = threading.Event()
    gate.set()  # the viewer shows the result's plane
    panel, image, result = _lazy_result(viewer, tmp_path, reads, gate)
    tools = panel.corrections
    gate.clear()  # the result's chunks wait for the gate: a read on the GUI thread blocks
    reads.clear()
    assert tools.correct() is None
    assert reads == [] and tools.copy_job is not None
    gate.set()
    wait_job(tools.copy_job)
    assert errors == []
    corrections = viewer.layers["img labels corrections"]
    assert isinstance(corrections.data, zarr.Array)  # not an in-memory copy of the whole store
    assert corrections.metadata["store"] == str(tmp_path / "img_labels_corrections.zarr")
    np.testing.assert_array_equal(corrections.data[:], _cells())
    assert original_of(corrections).name == result.data.name  # the result as copied, not read
    assert corrections.selected_label == 4
    assert "img labels corrections: split lines" in viewer.layers
    # the same result again: the copy is chosen, nothing is copied or read
    reads.clear()
    assert tools.correct() is corrections and reads == []
    # an edit on plane 2 (painted into the store): Fine-tune reads plane 2 of the result only
    corrections.data_setitem((np.array([2]), np.array([20]), np.array([20])), 9)
    assert zarr.open_group(corrections.metadata["store"], mode="r")["0"][2, 20, 20] == 9
    _on_plane(viewer, 2)
    reads.clear()
    _, _, labels, region, _ = painted_plane(viewer, image, corrections, None)
    assert set(reads) == {2}
    assert labels.shape == (32, 32) and region[20, 20] and labels[20, 20] == 9


def test_a_copy_of_a_result_removed_meanwhile_is_not_added_nor_kept(
    make_napari_viewer, wait_job, errors, tmp_path
):
    viewer = make_napari_viewer()
    reads: list[int] = []
    gate = threading.Event()
    gate.set()
    panel, _, result = _lazy_result(viewer, tmp_path, reads, gate)
    gate.clear()  # the copy waits until the result is gone
    assert panel.corrections.correct() is None
    viewer.layers.remove(result)
    gate.set()
    wait_job(panel.corrections.copy_job)
    assert errors == []
    assert "img labels corrections" not in viewer.layers
    assert not (tmp_path / "img_labels_corrections.zarr").exists()
    assert "removed" in panel.corrections.status.text()


def _store_reads(monkeypatch, store):
    """The planes whose chunks are read from the zarr store at ``store`` (array ``0``, one
    chunk per plane), a list filled as they are read."""
    from zarr.storage import LocalStore

    planes: list[int] = []
    real = LocalStore.get

    async def get(self, key, *args, **kwargs):
        parts = key.split("/")  # "0/<plane>/<row>/<column>", or metadata
        if Path(str(self.root)) == Path(store) and parts[0] == "0" and len(parts) == 4:
            planes.append(int(parts[1]))
        return await real(self, key, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "get", get)
    return planes


def test_a_split_of_lazy_corrections_reads_the_plane_cut_only(
    make_napari_viewer, wait_job, errors, tmp_path, monkeypatch
):
    """A split read the whole corrections layer on the GUI thread to find its highest id: for
    the copy of a block-wise result, its whole store, held in memory twice. Now the highest id
    comes with the copy (found chunk by chunk in its worker) and rises with every paint: only
    the plane cut is read and written, and the new piece's id is above every id in the store,
    a cell painted after the copy included."""
    from napari_unet._qt._split_lines import TOP_KEY

    viewer = make_napari_viewer()
    reads: list[int] = []
    _, _, tools = _corrected(viewer, tmp_path, wait_job, reads)
    corrections, lines = tools.corrections, tools.split_lines
    assert corrections.metadata[TOP_KEY] == 3
    corrections.brush_size = 3
    corrections.paint((0, 28, 28), 50)  # a missed cell painted on plane 0, as id 50
    assert corrections.metadata[TOP_KEY] == 50
    store = corrections.metadata["store"]
    before = zarr.open_group(store, mode="r")["0"][:]
    planes = _store_reads(monkeypatch, store)
    _on_plane(viewer, 2)
    planes.clear()
    reads.clear()
    lines.add_paths(np.array([[2.0, 0.0, 12.0], [2.0, 31.0, 12.0]]))  # across object 3
    assert errors == []
    assert set(planes) == {2} and reads == []  # nor the result, the original
    after = zarr.open_group(store, mode="r")["0"][:]
    assert set(np.unique(after[2])) == {0, 3, 51}
    np.testing.assert_array_equal(after[:2], before[:2])
    assert corrections.metadata[TOP_KEY] == 51
    corrections.undo()  # one undoable edit, as in memory
    np.testing.assert_array_equal(zarr.open_group(store, mode="r")["0"][:], before)


def test_a_paint_into_a_block_wise_result_leaves_its_corrections_original(
    make_napari_viewer, wait_job, errors, tmp_path
):
    """The corrections of a block-wise result kept the result layer's dask array itself as
    their original, and napari paints a dask array in place (its ``__setitem__`` gives the
    very array a new graph): a paint into the result after *Correct* changed the original
    under the corrections, so Fine-tune took the user's correction there for no edit, and
    *Correct* went on with the copy of a result no longer as copied. Now the original is the
    array as copied, and the painted result gets a copy of its own."""
    viewer = make_napari_viewer()
    panel, result, tools = _corrected(viewer, tmp_path, wait_job)
    corrections = tools.corrections
    for layer in (corrections, result):  # a missed cell painted, and by mistake in the result too
        layer.brush_size = 5
        layer.paint((1, 28, 6), 9)
    assert np.asarray(result.data)[1, 28, 6] == 9  # napari painted the dask array
    np.testing.assert_array_equal(np.asarray(original_of(corrections)), _cells())
    _on_plane(viewer, 1)
    _, _, labels, region, _ = painted_plane(viewer, panel.labels_image, corrections, None)
    assert region[28, 6] and labels[28, 6] == 9  # the painted cell is still the correction
    assert tools.correct() is None  # not the copy of the result as it is now: a new one
    wait_job(tools.copy_job)
    assert errors == []
    assert tools.corrections is not corrections and corrections in viewer.layers
    assert tools.corrections.metadata["store"] == str(tmp_path / "img_labels_corrections_2.zarr")


def test_new_data_in_lazy_corrections_give_splits_ids_above_theirs(
    make_napari_viewer, wait_job, errors, tmp_path
):
    """The highest id kept with a lazy corrections layer is that of its data: data put in its
    place (``layer.data = …``) drop it, and the next split finds theirs chunk by chunk."""
    from napari_unet._qt._split_lines import TOP_KEY

    viewer = make_napari_viewer()
    _, _, tools = _corrected(viewer, tmp_path, wait_job)
    corrections, lines = tools.corrections, tools.split_lines
    other = zarr.create_array(
        str(tmp_path / "other.zarr"), shape=SHAPE, chunks=(1, 32, 32), dtype="uint32"
    )
    other[:] = _cells()
    other[0, 28:30, 28:30] = 70
    corrections.data = other
    assert TOP_KEY not in corrections.metadata
    _on_plane(viewer, 2)
    lines.add_paths(np.array([[2.0, 0.0, 12.0], [2.0, 31.0, 12.0]]))  # across object 3
    assert errors == []
    assert set(np.unique(other[2])) == {0, 3, 71}
    assert corrections.metadata[TOP_KEY] == 71
