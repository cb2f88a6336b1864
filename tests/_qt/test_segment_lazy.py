"""Segment on a lazy (dask) layer: block by block into a zarr store, shown as lazy labels;
Cancel leaves no store."""

from __future__ import annotations

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
pytest.importorskip("zarr")

from napari_unet._qt.segment_widget import SegmentWidget  # noqa: E402


def _lazy_layer(viewer, image, name="lazy"):
    reads = []

    def read(block, block_info=None):
        reads.append(block.size)
        return block

    lazy = da.from_array(image, chunks=(64, 64)).map_blocks(read, dtype=image.dtype)
    return viewer.add_image(lazy, name=name, scale=(0.5, 0.5), translate=(3.0, 4.0)), reads


def _segmented_both_ways(viewer, widget, wait_job, data, name, store, chunks, axes=None, **layer):
    """Segment ``data`` with ``widget`` as the in-memory layer ``name``, then as the dask layer
    ``lazy <name>`` (``chunks``) block by block into ``store``, with ``axes`` chosen when given;
    returns both labels (in memory, lazy) as arrays."""
    labels = []
    for lazy in (False, True):
        image = da.from_array(data, chunks=chunks) if lazy else data
        shown = f"lazy {name}" if lazy else name
        widget.image.value = viewer.add_image(image, name=shown, **layer)
        if axes is not None:
            widget.axes.value = axes
        if lazy:
            widget.store.value = store
        wait_job(widget.segment())
        labels.append(np.array(viewer.layers[f"{shown} labels"].data))
    return labels


def test_lazy_layer_goes_to_a_zarr_store_and_a_lazy_labels_layer(
    viewer_with_image, nuclei_image, wait_job, errors, tmp_path
):
    viewer = viewer_with_image
    image = np.tile(nuclei_image[0], (2, 2))  # (256, 256)
    layer, reads = _lazy_layer(viewer, image)
    widget = SegmentWidget(viewer)
    widget.min_confidence.value = 0.0  # the tiny test model is unsure of every cell
    widget.image.value = layer
    assert widget.lazy_input
    widget.store.value = tmp_path / "out.zarr"
    widget.diameter.value = 16
    widget.min_size.value = 10  # the tiny model draws small fragments of its 16 px cells
    reads.clear()
    events = []
    job = widget.segment()
    assert job.pbar is None  # the panel's own bar, not napari's (its redraws held the loop)
    job.worker.yielded.connect(events.append)
    wait_job(job)
    assert errors == []
    labels = viewer.layers["lazy labels"]
    assert isinstance(labels.data, da.Array) and labels.data.shape == image.shape
    assert (tmp_path / "out.zarr").is_dir()
    values = np.asarray(labels.data)
    assert len(np.unique(values)) > 10
    np.testing.assert_allclose(labels.scale, layer.scale)
    assert any(type(e).__name__ == "BlockDone" for e in events)
    assert max(reads) <= 64 * 64  # read chunk by chunk, never as a whole
    assert "cells" in widget.status.value and "out.zarr" in widget.status.value


@pytest.mark.timing
def test_cancel_leaves_no_store(viewer_with_image, nuclei_image, wait_job, tmp_path, monkeypatch):
    from napari_unet.engine import blockwise

    monkeypatch.setattr(blockwise, "DEFAULT_BLOCK", 128)  # 9 blocks: cancelled after the first
    viewer = viewer_with_image
    layer, _ = _lazy_layer(viewer, np.tile(nuclei_image[0], (3, 3)))
    widget = SegmentWidget(viewer)
    widget.min_confidence.value = 0.0  # the tiny test model is unsure of every cell
    widget.image.value = layer
    widget.store.value = tmp_path / "out.zarr"
    widget.diameter.value = 16
    job = widget.segment()

    def cancel_on_first_block(event):
        if type(event).__name__ == "BlockDone":
            widget.cancel()

    job.worker.yielded.connect(cancel_on_first_block)
    wait_job(job, timeout=60_000)
    assert job.cancelled
    assert "lazy labels" not in viewer.layers
    assert list(tmp_path.iterdir()) == []


def test_existing_store_is_refused(viewer_with_image, nuclei_image, errors, tmp_path):
    """An existing store is refused in the panel's words: the sentence told the user to
    'pass --overwrite to replace it', an option of the command line the panel does not have."""
    viewer = viewer_with_image
    layer, _ = _lazy_layer(viewer, nuclei_image[0])
    (tmp_path / "out.zarr").mkdir()
    widget = SegmentWidget(viewer)
    widget.min_confidence.value = 0.0  # the tiny test model is unsure of every cell
    widget.image.value = layer
    widget.store.value = tmp_path / "out.zarr"
    assert widget.segment() is None
    store = tmp_path / "out.zarr"
    assert errors == [f"Segmentation failed: {store} already exists; name a new labels store."]


def test_two_runs_in_one_second_get_two_stores(
    viewer_with_image, nuclei_image, wait_job, errors, tmp_path, monkeypatch
):
    """Without a named store, the labels go to a store named after the layer and the second;
    a second Segment of a small lazy image within the same second was refused, the store of the
    first 'already exists'. It gets a store of its own now."""
    import tempfile
    import time

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(time, "strftime", lambda _format: "20260101-120000")  # one second
    viewer = viewer_with_image
    layer, _ = _lazy_layer(viewer, nuclei_image[0][:64, :64])
    widget = SegmentWidget(viewer)
    widget.image.value = layer
    wait_job(widget.segment())
    wait_job(widget.segment())
    assert errors == []
    folder = tmp_path / "napari-unet"
    stores = sorted(path.name for path in folder.iterdir())
    assert stores == ["lazy_labels_20260101-120000.zarr", "lazy_labels_20260101-120000_2.zarr"]
    assert str(folder / stores[1]) in widget.status.value


def test_a_lazy_layer_is_read_in_its_axes_as_in_memory(
    viewer_with_image, nuclei_image, stack_image, wait_job, errors, tmp_path
):
    """Block by block, the panel passed the layer's array as it lies: a lazy RGB layer was
    refused ('the model reads 1 channel(s), the image has 3'; in memory it is made gray), and
    a (Y, X, Z) layer failed with 'out has shape (2, 128, 2), the labels need (128, 128, 2)'.
    Now RGB is made gray as in memory, and planes after Y and X are refused with a sentence."""
    viewer = viewer_with_image
    gray = nuclei_image[0]
    colour = np.stack([gray // 2, gray, gray // 4], axis=-1)
    widget = SegmentWidget(viewer)
    widget.min_confidence.value = 0.0  # the tiny test model is unsure of every cell
    in_memory, lazy = _segmented_both_ways(
        viewer, widget, wait_job, colour, "rgb", tmp_path / "rgb.zarr", 64, rgb=True
    )
    assert errors == []
    assert lazy.shape == gray.shape and lazy.max() > 1
    np.testing.assert_array_equal(lazy > 0, in_memory > 0)

    yxz = da.from_array(np.moveaxis(stack_image[:2], 0, -1), chunks=64)
    widget.image.value = viewer.add_image(yxz, name="yxz")
    assert widget.axes.value == "YXZ"
    widget.store.value = tmp_path / "yxz.zarr"
    job = widget.segment()
    wait_job(job)
    assert errors == [
        "Segmentation failed: block by block the labels are written plane by plane, so the "
        "plane axes must come before Y and X (e.g. ZYX, TZYX, ZCYX); choose such axes, or load "
        "the layer into memory."
    ]
    assert "yxz labels" not in viewer.layers and not (tmp_path / "yxz.zarr").exists()


def test_a_lazy_layer_with_time_and_z_is_segmented_in_its_axes(
    viewer_with_image, stack_image, wait_job, errors, tmp_path
):
    """A lazy (T, Z, Y, X) layer was refused ('one plane axis at most'), though the block-wise
    engine segments its T x Z planes; now its labels come back in T, Z, Y, X, as in memory."""
    viewer = viewer_with_image
    tzyx = stack_image[:4].reshape(2, 2, *stack_image.shape[1:])
    widget = SegmentWidget(viewer)
    widget.min_confidence.value = 0.0  # the tiny test model is unsure of every cell
    widget.diameter.value = 16
    widget.min_size.value = 10  # block by block the size is not measured on the whole plane
    in_memory, lazy = _segmented_both_ways(
        viewer, widget, wait_job, tzyx, "tzyx", tmp_path / "tzyx.zarr", (1, 1, 64, 64), "TZYX"
    )
    assert errors == []
    assert lazy.shape == tzyx.shape and lazy.max() > 1
    np.testing.assert_array_equal(lazy > 0, in_memory > 0)


def test_a_lazy_result_of_replaced_data_is_marked_old_until_the_next_run(
    viewer_with_image, nuclei_image, wait_job, errors, tmp_path
):
    """The block-wise result had no key: when the image's data were replaced it stayed shown
    as the result of the new data, where the in-memory result is hidden and named
    '(old data)', and every rerun added another 'lazy labels' layer. Now it is keyed by its
    image like the in-memory result: marked old, then updated in place by the next run."""
    viewer = viewer_with_image
    layer, _ = _lazy_layer(viewer, nuclei_image[0][:64, :64])
    widget = SegmentWidget(viewer)
    widget.image.value = layer
    widget.store.value = tmp_path / "first.zarr"
    wait_job(widget.segment())
    labels = viewer.layers["lazy labels"]
    assert labels.metadata["store"] == str(tmp_path / "first.zarr")
    layer.data = da.from_array(np.ascontiguousarray(nuclei_image[0][:64, :64][::-1]))
    assert labels.name == "lazy labels (old data)" and not labels.visible
    n_layers = len(viewer.layers)
    widget.store.value = tmp_path / "second.zarr"
    wait_job(widget.segment())
    assert errors == [] and len(viewer.layers) == n_layers
    assert viewer.layers["lazy labels"] is labels and labels.visible
    assert labels.metadata["store"] == str(tmp_path / "second.zarr")
    assert widget.labels_layer is labels


def test_a_rerun_leaves_the_result_a_correction_copied_as_it_was(
    viewer_with_image, nuclei_image, wait_job, errors, tmp_path
):
    """The corrections of a block-wise result keep the result's store as their original (what
    was edited is inferred against it). Segment never writes into an existing store: the same
    store named again is refused, and a rerun into a new store gives the result layer the new
    store while the corrections keep the first, unchanged, with the user's edit inferred as
    before."""
    import zarr

    from napari_unet._qt._correction_layers import original_of
    from napari_unet.engine.corrections import edited_region

    viewer = viewer_with_image
    layer, _ = _lazy_layer(viewer, nuclei_image[0][:64, :64])
    widget = SegmentWidget(viewer)
    widget.min_confidence.value = 0.0  # the tiny test model is unsure of every cell
    widget.image.value = layer
    widget.store.value = tmp_path / "first.zarr"
    wait_job(widget.segment())
    result = viewer.layers["lazy labels"]
    first = np.asarray(result.data)
    victim = int(first.max())
    assert victim > 0
    tools = widget.corrections
    tools.correct()
    wait_job(tools.copy_job)
    corrections = tools.corrections
    corrections.data_setitem(np.nonzero(first == victim), 0)  # the user deletes an object
    assert widget.segment() is None  # the same store again: refused, nothing written
    assert errors == [
        f"Segmentation failed: {tmp_path / 'first.zarr'} already exists; name a new labels store."
    ]
    widget.store.value = tmp_path / "second.zarr"
    widget.threshold.value = 0.9
    wait_job(widget.segment())
    assert len(errors) == 1
    assert result.metadata["store"] == str(tmp_path / "second.zarr")
    np.testing.assert_array_equal(zarr.open_group(tmp_path / "first.zarr", mode="r")["0"][:], first)
    original = np.asarray(original_of(corrections))
    np.testing.assert_array_equal(original, first)
    region = edited_region(original, np.asarray(corrections.data), margin=0)
    np.testing.assert_array_equal(region, first == victim)  # the deletion, and only it
    tools.correct()  # the new result gets a copy of its own; the first corrections stay
    wait_job(tools.copy_job)
    assert tools.corrections is not corrections and corrections in viewer.layers
    assert tools.corrections.metadata["store"] == str(tmp_path / "second_corrections.zarr")
    assert not np.isin(np.asarray(corrections.data), [victim]).any()
