"""How a Fine-tune run ends other than by its last step: Stop, a time budget, a failure, the
image removed, the panel closed; the model of the last good step is kept."""

from __future__ import annotations

import numpy as np
import pytest
from finetune_helpers import drain, finetune_panel, paint

from napari_unet._qt._segment_call import engine_options, segment_call
from napari_unet._qt._session import session_for
from napari_unet._qt.finetune_widget import DISPLAY_INTERVAL_MS
from napari_unet._qt.segment_widget import SegmentWidget


@pytest.mark.timing
def test_stop_keeps_the_model_and_segment_uses_it(
    viewer_with_image, nuclei_image, wait_job, qtbot, errors
):
    """Stop during a long run, after a preview computed from a snapshot while training went
    on: the model of the last completed step becomes current and the Segment widget uses it."""
    viewer = viewer_with_image
    image_data = viewer.layers["nuclei"].data.copy()
    painted = paint(viewer, nuclei_image[1])
    segment = SegmentWidget(viewer)
    segment.min_confidence.value = 0.0  # the tiny test model is unsure of every cell
    widget = finetune_panel(viewer, steps=500)
    job = widget.start()

    def preview_once_snapshot_exists(event):
        if type(event).__name__ == "ModelSnapshot" and widget.preview.source is None:
            widget.preview_button.click()

    job.worker.yielded.connect(preview_once_snapshot_exists)
    qtbot.waitUntil(lambda: "nuclei preview labels" in viewer.layers, timeout=30_000)
    assert job.running  # the preview came while training went on
    assert widget.preview.source.startswith("step ")
    widget.stop_button.click()
    wait_job(job)

    assert job.cancelled and errors == []
    run = widget.run
    assert 10 <= run.steps_done < 500 and run.final_step == run.steps_done
    assert widget.status.value.startswith(f"stopped after step {run.steps_done}")
    widget.use_button.click()
    current = session_for(viewer).current
    assert current.kind == "fine-tuned" and current.step == run.steps_done
    assert "augmented tile" in viewer.layers

    assert segment.model.value is current
    wait_job(segment.segment())
    labels = viewer.layers["nuclei labels"].data
    # how many cells a model stopped after a load-dependent number of steps finds varies, so
    # the check is that Segment's labels are the stopped model's own labels
    expected = drain(
        segment_call(
            image_data, None, current.source,
            **engine_options(segment.segment_options(), viewer.layers["nuclei"]),
        )
    ).labels
    assert labels.shape == (128, 128)
    np.testing.assert_array_equal(labels, expected)
    assert errors == []
    np.testing.assert_array_equal(viewer.layers["nuclei"].data, image_data)
    np.testing.assert_array_equal(painted.data, nuclei_image[1])


def test_a_time_budget_ends_the_run(viewer_with_image, nuclei_image, wait_job, qtbot):
    """A 3 s budget with 100000 steps: the run stops after the step that reaches it, the
    progress shows seconds per step and the time left, and the plot's axis ends at the steps
    done."""
    viewer = viewer_with_image
    paint(viewer, nuclei_image[1])
    widget = finetune_panel(viewer, steps=100_000, minutes=0.05)
    shown = []
    widget.timer.timeout.connect(lambda: shown.append(widget.progress.bar.format()))
    job = widget.start()
    wait_job(job)
    run = widget.run
    assert run.time_up and not job.cancelled and job.error is None
    assert 1 <= run.steps_done < 100_000
    assert widget.status.value.startswith(f"time is up after step {run.steps_done} (")
    assert "s per step" in widget.status.value
    assert any(" s per step · " in text and "left" in text for text in shown), shown
    assert any(text.startswith("step ") and " of about " in text for text in shown), shown
    assert widget.plot.total == widget.plot.steps[-1] == run.steps_done
    assert widget.result_entry.step == run.steps_done


def test_a_failure_mid_run_keeps_the_last_snapshot(
    viewer_with_image, nuclei_image, wait_job, monkeypatch, errors
):
    """Out of memory at step 12: the user reads why, the weights of the step-10 snapshot
    become the current model, and the kept error holds no tensors of the failed step."""
    import torch

    import napari_unet.engine.losses as losses

    real = losses.weighted_cross_entropy
    calls = []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 12:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(losses, "weighted_cross_entropy", failing)
    viewer = viewer_with_image
    paint(viewer, nuclei_image[1])
    widget = finetune_panel(viewer, steps=30)
    job = widget.start()
    wait_job(job, timeout=30_000)  # a RuntimeError must not leave the job hanging

    assert errors == [
        "Fine-tuning failed: out of memory on the GPU; try a smaller tile size or the CPU."
    ]
    current = widget.result_entry
    assert current.kind == "fine-tuned" and current.step == 10
    assert widget.run.steps_done == 11
    assert "kept the model of step 10" in widget.status.value
    for error in (job.error, job.error.__cause__):
        tb = error.__traceback__
        while tb is not None:
            assert not any(isinstance(v, torch.Tensor) for v in tb.tb_frame.f_locals.values())
            tb = tb.tb_next


def test_removing_the_image_stops_the_run(viewer_with_image, nuclei_image, wait_job, qtbot):
    viewer = viewer_with_image
    paint(viewer, nuclei_image[1])
    widget = finetune_panel(viewer, steps=5000)
    job = widget.start()
    qtbot.waitUntil(lambda: widget.run.steps_done > 0, timeout=30_000)
    viewer.layers.remove("nuclei")
    wait_job(job)
    assert job.cancelled
    assert widget.status.value.startswith(f"stopped after step {widget.run.final_step}")
    # the reason stays: the final line replaced "stopping: 'nuclei' was removed…"
    assert widget.status.value.endswith(": 'nuclei' was removed")
    assert widget.start_button.isEnabled()


def test_closing_the_panel_stops_the_run(viewer_with_image, nuclei_image, wait_job, qtbot, errors):
    """napari takes a closed panel out of its dock without deleting it: the run used to go on
    unseen until its time budget (updating the viewer's layers; its model out of reach). Now
    closing the panel stops it after the step in progress, and nothing more is shown."""
    viewer = viewer_with_image
    paint(viewer, nuclei_image[1])
    widget = finetune_panel(viewer, steps=5000, minutes=0)
    dock = viewer.window.add_dock_widget(widget)
    job = widget.start()
    qtbot.waitUntil(lambda: widget.run.steps_done > 0, timeout=30_000)
    dock.destroyOnClose()  # the dock's close button
    wait_job(job, timeout=10_000)
    assert job.cancelled and widget.run.steps_done < 5000 and errors == []
    assert widget.status.value.startswith("stopped after step")
    assert "nuclei preview labels" not in viewer.layers


def test_removing_the_painted_cells_removes_their_displays(
    viewer_with_image, long_finetune, wait_job, qtbot, errors
):
    """The painted cells removed while a run shows their weight map and augmented tiles: the
    run stopped, but the weight maps of the removed labels and the tiles beside the gap they
    left stayed as orphans. Now they go with the labels; the image, its preview and the kept
    model stay."""
    viewer, widget = viewer_with_image, long_finetune
    job = widget.start()
    displays = [
        "painted weight map",
        "painted weight w_c",
        "painted weight border term",
        "augmented tile",
        "augmented tile labels",
    ]
    qtbot.waitUntil(lambda: all(name in viewer.layers for name in displays), timeout=60_000)
    viewer.layers.remove("painted")
    wait_job(job, timeout=10_000)
    qtbot.waitUntil(lambda: not widget.preview.runner.busy, timeout=30_000)
    qtbot.wait(2 * DISPLAY_INTERVAL_MS)  # display ticks after the end show nothing again
    assert job.cancelled and errors == []
    names = [layer.name for layer in viewer.layers]
    assert not set(displays) & set(names), names
    assert "nuclei" in names and widget.result_entry is not None
    assert widget.status.value.startswith(f"stopped after step {widget.run.final_step}")
