"""The Segment widget's jobs in a real viewer: Cancel (and the planes it keeps), the panel's
progress, the event loop during a run, and a run whose image is removed, replaced or whose viewer
closes. Shared helpers in segment_helpers.py."""

from __future__ import annotations

import time

import numpy as np
import pytest
from segment_helpers import segment_panel, segmenting_a_long_stack

from napari_unet._qt.segment_widget import SegmentWidget


@pytest.mark.timing
def test_cancel_stops_a_long_run(viewer_with_image, stack_image, wait_job):
    viewer = viewer_with_image
    big = np.concatenate([stack_image] * 4)  # 48 planes
    layer = viewer.add_image(big, name="long stack")
    widget = segment_panel(viewer)
    widget.image.value = layer
    job = widget.segment()
    events = []

    def cancel_on_first_tile(event):
        events.append(event)
        if type(event).__name__ == "TileDone":
            widget.cancel()

    job.worker.yielded.connect(cancel_on_first_tile)
    started = time.perf_counter()
    wait_job(job, timeout=30_000)
    assert job.cancelled
    tiles = [e for e in events if type(e).__name__ == "TileDone"]
    assert tiles and tiles[-1].done < tiles[-1].total  # it stopped early
    assert time.perf_counter() - started < 20
    assert "long stack labels" not in viewer.layers
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert widget.status.value == "cancelled"


def test_cancel_keeps_the_planes_done(viewer_with_image, stack_image, wait_job, errors):
    """Cancel after 3 of 6 planes: a layer "(partial, 3 of 6 planes)" holds those planes as a
    full run labels them, the other planes 0; a full result of an earlier run is kept."""
    viewer = viewer_with_image
    layer = viewer.add_image(stack_image[:6], name="stack")
    widget = segment_panel(viewer)
    widget.image.value = layer
    wait_job(widget.segment())
    full = viewer.layers["stack labels"].data.copy()

    job = widget.segment()
    seen = []

    def cancel_at_the_third_plane(event):
        if type(event).__name__ == "PlaneSegmented":
            seen.append(event.plane)
            if len(seen) == 3:
                widget.cancel()

    job.worker.yielded.connect(cancel_at_the_third_plane)
    wait_job(job, timeout=60_000)
    assert job.cancelled and errors == []
    partial = viewer.layers["stack labels (partial, 3 of 6 planes)"]
    np.testing.assert_array_equal(partial.data[:3], full[:3])
    assert full[3:].any() and not partial.data[3:].any()
    np.testing.assert_array_equal(viewer.layers["stack labels"].data, full)  # kept as it was
    assert "partial, 3 of 6 planes" in widget.status.value


def test_event_loop_keeps_running_during_segment(
    viewer_with_image, stack_image, wait_job, run_with_ticks, cpu_load
):
    """A QTimer keeps ticking while the worker segments a stack, with two CPU-burning processes
    beside it: the longest gap between ticks, from the click until the result reaches the main
    thread, stays under 100 ms (18-22 ms measured). (Drawing the finished result is the
    viewer's own repaint and is reported, not asserted: about 240 ms under that load.)"""
    viewer = viewer_with_image
    warm = viewer.add_image(stack_image[:2], name="warm-up")
    widget = segment_panel(viewer)
    widget.image.value = warm
    wait_job(widget.segment())  # warm up: imports, the first model load, the first layer
    # long enough (60 planes, a few hundred ms) for many ticks of a 10 ms timer
    widget.image.value = viewer.add_image(np.concatenate([stack_image] * 5), name="stack")

    job, started, _, ticks = run_with_ticks(widget.segment)
    assert job.returned_at is not None
    during = ticks[(ticks >= started) & (ticks <= job.returned_at)]
    gaps = np.diff(np.concatenate([[started], during, [job.returned_at]]))
    after = np.diff(ticks).max()
    print(
        f"\nQTimer during Segment ({1000 * (job.returned_at - started):.0f} ms, {len(during)} "
        f"ticks): max gap {1000 * gaps.max():.0f} ms; including the result display: "
        f"{1000 * after:.0f} ms"
    )
    assert len(during) >= 5
    assert gaps.max() <= 0.100


def test_the_panel_shows_progress(viewer_with_image, stack_image, wait_job, qtbot):
    viewer = viewer_with_image
    widget = segment_panel(viewer, qtbot)
    widget.image.value = viewer.add_image(stack_image[:4], name="stack")
    shown = []
    job = widget.segment()
    assert widget.progress.bar.isVisibleTo(widget)
    job.worker.yielded.connect(lambda _e: shown.append(widget.progress.bar.format()))
    wait_job(job)
    assert any(text.startswith("plane 4 of 4 · 100 %") for text in shown), shown[-3:]
    assert any("left" in text for text in shown)
    assert not widget.progress.bar.isVisibleTo(widget)


def test_removing_the_image_cancels_its_job(viewer_with_image, stack_image, wait_job, qtbot):
    viewer = viewer_with_image
    layer, widget, job = segmenting_a_long_stack(viewer, stack_image, qtbot)
    viewer.layers.remove(layer)
    wait_job(job, timeout=30_000)
    assert job.cancelled
    assert widget.status.value == "cancelled: the image 'long stack' was removed"
    assert widget.run_button.isEnabled() and not widget.progress.bar.isVisibleTo(widget)
    assert "long stack labels" not in viewer.layers


def test_replacing_the_image_data_cancels_its_job(
    viewer_with_image, stack_image, wait_job, qtbot, errors
):
    """The image's data replaced while it is segmented (another shape): the result of the old
    data was shown over the new as '<image> labels' of the old shape. Now the job is cancelled,
    the status says why, and neither a result nor a partial result is added."""
    viewer = viewer_with_image
    layer, widget, job = segmenting_a_long_stack(viewer, stack_image, qtbot)
    layer.data = stack_image[0][:64, :64]
    wait_job(job, timeout=30_000)
    assert job.cancelled and errors == []
    assert widget.status.value == "cancelled: the data of 'long stack' were replaced; segment again"
    assert [lyr.name for lyr in viewer.layers] == ["nuclei", "long stack"]
    assert widget.run_button.isEnabled()
    wait_job(widget.segment())  # the new data segment as usual
    assert viewer.layers["long stack labels"].data.shape == (64, 64)


def test_closing_the_viewer_during_a_job_ends_it_cleanly(
    make_napari_viewer, stack_image, tiny_entry, qtbot
):
    """The panel is deleted with the viewer while its job runs: the job ends (cancelled) and
    no handler touches a deleted widget (pytest-qt fails the test on an exception in a slot)."""
    from napari_unet._qt._session import session_for

    viewer = make_napari_viewer()
    session_for(viewer).set_current(tiny_entry)
    viewer.add_image(np.concatenate([stack_image] * 4), name="long stack")
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    job = widget.segment()
    qtbot.waitUntil(lambda: job.worker.is_running or job.done, timeout=30_000)
    viewer.close()
    qtbot.waitUntil(lambda: job.done, timeout=30_000)
    assert job.cancelled
