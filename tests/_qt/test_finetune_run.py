"""Fine-tune runs in a real viewer: the live layers, a falling loss, the event loop kept
running, the closing work, the rescaling to the model's diameter and the kept model's name."""

from __future__ import annotations

import numpy as np
import pytest
from finetune_helpers import GEOMETRY, finetune_panel, paint, top_half

from napari_unet._qt._session import ModelEntry, session_for
from napari_unet._qt.finetune_widget import WeightMapReady


def test_finetune_shows_live_layers_and_the_loss_falls(
    viewer_with_image, nuclei_image, wait_job, qtbot, errors
):
    """An untrained tiny net fine-tuned for 40 steps on the painted top half: the weight map,
    the augmented tile and the preview appear as plugin layers, the loss falls, the result
    becomes the session's (CPU) model, and the user's layers are untouched."""
    import torch

    from napari_unet.engine.model import UNet, UNetConfig

    viewer = viewer_with_image
    torch.manual_seed(0)
    fresh = UNet(UNetConfig(depth=2, base_channels=8))
    session = session_for(viewer)
    session.set_current(ModelEntry("untrained tiny net", lambda: fresh, kind="file"))
    painted_data, rectangle = top_half(nuclei_image[1])
    painted = paint(viewer, painted_data)
    shapes = viewer.add_shapes([rectangle], shape_type="rectangle", name="regions", **GEOMETRY)
    before = {name: np.array(viewer.layers[name].data, copy=True) for name in ("nuclei", "painted")}
    shapes_before = [np.array(s, copy=True) for s in shapes.data]

    widget = finetune_panel(viewer, steps=40, preview_every=20, lr=3e-3)
    widget.regions.value = shapes
    assert widget.image.value is viewer.layers["nuclei"] and widget.labels.value is painted
    assert widget.start_model.value == "untrained tiny net"
    job = widget.start()
    assert not widget.start_button.isEnabled() and widget.stop_button.isEnabled()
    wait_job(job)
    qtbot.waitUntil(lambda: not widget.preview.runner.busy, timeout=30_000)
    assert errors == []

    # the loss falls: the median of the last 8 steps is clearly below that of the first 8
    losses = np.array(widget.plot.losses)
    assert widget.plot.steps == list(range(1, 41))  # every step, in order
    first, last = np.median(losses[:8]), np.median(losses[-8:])
    print(f"\nloss: first 8 steps {first:.3f}, last 8 steps {last:.3f}")
    assert last < 0.9 * first
    assert widget.plot.val_steps and widget.plot.val_steps[-1] == 40  # validation was plotted
    assert not widget.plot.grab().isNull()  # paints without error

    # the weight map: plugin-owned, over the labels, and 0 outside the region and the cells
    total = viewer.layers["painted weight map"]
    for name in ("painted weight map", "painted weight w_c", "painted weight border term"):
        layer = viewer.layers[name]
        assert layer.metadata["napari_unet"] == "finetune"
        assert layer.data.shape == (128, 128)
        np.testing.assert_allclose(layer.scale, GEOMETRY["scale"])
    assert viewer.layers["painted weight border term"].data.max() > 0
    assert total.data[:60].min() > 0 and total.data[100:].max() == 0

    # the augmented tile and its labels, beside the painted layer
    tile = viewer.layers["augmented tile"]
    tile_labels = viewer.layers["augmented tile labels"]
    assert tile.metadata["napari_unet"] == tile_labels.metadata["napari_unet"] == "finetune"
    assert tile.data.shape == tile_labels.data.shape and tile_labels.data.max() > 0
    assert tile.translate[1] > painted.translate[1] + 128 * 0.5  # right of the labels

    # the preview of the current plane
    preview = viewer.layers["nuclei preview labels"]
    assert widget.preview_info.value.startswith("preview (fine-tuned on painted (step 40))")
    assert preview.metadata["napari_unet"] == "finetune"
    assert preview.data.shape == (128, 128)

    # the result is offered, with its scores; it becomes the session's model (a CPU copy) only
    # on "Use for Segment"; the start model was not trained
    assert session.current.label == "untrained tiny net" and widget.use_button.isEnabled()
    assert "Painted cells, before: " in widget.status.value and "after: " in widget.status.value
    widget.use_button.click()
    current = session.current
    assert current.kind == "fine-tuned" and current.step == 40
    assert current is widget.result_entry and widget.start_model.value == current.label
    net, checkpoint = current.source
    assert net is not fresh
    assert all(p.device.type == "cpu" for p in net.parameters())
    assert checkpoint.training["steps_done"] == 40
    assert not any(
        torch.equal(a, b) for a, b in zip(fresh.parameters(), net.parameters(), strict=True)
    )
    assert widget._snapshot is None and widget.run.snapshot is None  # no weights kept twice
    assert widget.start_button.isEnabled() and widget.save_button.isEnabled()
    assert not widget.use_button.isEnabled()
    assert widget.status.value == f"Segment now uses '{current.label}'"

    for name, data in before.items():
        np.testing.assert_array_equal(viewer.layers[name].data, data)
    assert len(shapes.data) == 1 and np.array_equal(shapes.data[0], shapes_before[0])
    owned = {layer.name for layer in viewer.layers if "napari_unet" in layer.metadata}
    assert {"nuclei", "painted", "regions"}.isdisjoint(owned)


def test_the_work_after_the_last_step_is_said_and_not_counted_as_steps(
    viewer_with_image, nuclei_image, wait_job, qtbot, monkeypatch
):
    """After the last step the trained model segments the plane to choose its minimum
    confidence (a minute on a 1536 x 1536 image here): the bar stayed on the last step, and
    the closing status counted that time as steps ('2 steps, 55.44 s per step'). Now the bar
    says what runs, and the seconds per step are the steps'."""
    import time

    import napari_unet._qt._finetune_job as job_module

    choose = job_module._choose_min_confidence

    def slow_choice(*args):
        time.sleep(5.0)
        return choose(*args)

    monkeypatch.setattr(job_module, "_choose_min_confidence", slow_choice)
    viewer = viewer_with_image
    paint(viewer, nuclei_image[1])
    widget = finetune_panel(viewer, steps=2)
    job = widget.start()
    qtbot.waitUntil(lambda: "choosing the minimum confidence" in widget.progress.bar.format())
    qtbot.wait(600)  # display ticks do not put the steps back
    assert "choosing the minimum confidence" in widget.progress.bar.format()
    wait_job(job)
    per_step = float(widget.status.value.split(" s per step")[0].rsplit(", ", 1)[1])
    slowest = max(h["seconds"] for h in widget.run.history if "loss" in h)
    assert widget.status.value.startswith("done after step 2")
    assert per_step < slowest + 1.0  # the 5 s after the steps made it 2.5 s more


def test_cells_are_rescaled_to_the_model_diameter(nuclei_image):
    """A model trained at 32 px cells fine-tuned on 16 px cells: the image is rescaled by ~2 for
    training, the model keeps its diameter, and previews segment with the painted diameter."""
    from napari_unet._qt.finetune_widget import FineTuneRequest, RunState, finetune_job
    from napari_unet.engine.checkpoint import Checkpoint
    from napari_unet.engine.events import StepDone
    from napari_unet.engine.model import UNet, UNetConfig
    from napari_unet.engine.training import TrainConfig
    from napari_unet.engine.weights import WeightMap

    net = UNet(UNetConfig(depth=2, base_channels=8))
    checkpoint = Checkpoint(config=net.config, diameter=32.0, extra={"data": "synthetic"})
    entry = ModelEntry("32 px model", lambda: (net, checkpoint), kind="file")
    image, truth = nuclei_image
    request = FineTuneRequest(
        entry=entry,
        image=image,
        channel_axis=None,
        labels=truth,
        regions=None,
        config=TrainConfig(steps=2, tile_size=48, sample_every=1, val_fraction=0),
        device="cpu",
        diameter=None,
        labels_name="cells",
    )
    run = RunState(base_label=entry.label)
    events = list(finetune_job(request, run))

    assert isinstance(events[0], WeightMapReady) and isinstance(events[0].weight_map, WeightMap)
    assert events[0].weight_map.total.shape == truth.shape  # shown at the labels' own scale
    assert [e.step for e in events if isinstance(e, StepDone)] == [1, 2]
    scale = run.scale
    assert 1.6 < scale.factor < 2.4 and scale.data_diameter == pytest.approx(32.0 / scale.factor)
    assert scale.input_diameter == pytest.approx(scale.data_diameter)
    kept, meta = run.final
    assert kept is not net and run.final_step == 2
    assert meta.diameter == 32.0 and meta.extra["data"] == "synthetic"
    assert meta.extra["fine_tuned_from"] == "32 px model"
    assert meta.training["steps_done"] == 2 and meta.training["fine_tuned_from"] == "32 px model"


def test_a_run_from_a_fine_tuned_model_is_named_after_both():
    """Fine-tuning a fine-tuned model kept a model named like the one it started from
    ('fine-tuned on painted (step 3)' twice in the model list)."""
    from types import SimpleNamespace

    from napari_unet._qt._finetune_job import RunState, kept_model

    job = SimpleNamespace(cancelled=False, error=None)

    def run(base_label, base_kind):
        state = RunState(base_label=base_label, base_kind=base_kind)
        state.extra = {"fine_tuned_on": "painted"}
        state.final, state.final_step = (object(), SimpleNamespace(normalization={}, extra={})), 5
        return kept_model(state, job)[0].label

    assert run("bundled default", "default") == "fine-tuned on painted (step 5)"
    assert run("fine-tuned on painted (step 3)", "fine-tuned") == (
        "fine-tuned on painted (step 3), then on painted (step 5)"
    )


def _repaint_floor(qtbot, layer, seconds: float = 2.5) -> float:
    """The longest gap (s) of a 10 ms QTimer while ``layer``'s data are replaced every 250 ms
    and nothing else runs: what napari's own update and repaint of the viewer's visible layers
    costs on this machine, now (the benchmark's *floor*, docs/benchmarks/responsiveness.md)."""
    import time

    from qtpy.QtCore import QTimer

    rng = np.random.default_rng(0)
    shape, dtype = layer.data.shape, layer.data.dtype
    ticks: list[float] = []
    clock = QTimer()
    clock.setInterval(10)
    clock.timeout.connect(lambda: ticks.append(time.perf_counter()))
    updates = QTimer()
    updates.setInterval(250)
    updates.timeout.connect(
        lambda: setattr(layer, "data", rng.integers(0, 20, shape).astype(dtype))
    )
    clock.start()
    updates.start()
    qtbot.wait(int(1000 * seconds))
    updates.stop()
    clock.stop()
    return float(np.diff(ticks).max())


def test_event_loop_keeps_running_during_finetune(
    viewer_with_image, nuclei_image, wait_job, run_with_ticks, cpu_load, qtbot
):
    """A QTimer keeps ticking while the worker trains and the live layers update, with two
    CPU-burning processes beside it: the longest gap between ticks from the first training
    step until the run ends stays under 250 ms, or, where napari's own repaint of the same
    layers under the same load already takes longer (software OpenGL on a slow machine: 269 ms
    in one run here), within 1.25x of that floor, measured in this test just before. (The
    issue's goal is 100 ms and Segment meets it; Fine-tune does not on a 2-core machine with
    software OpenGL, see docs/benchmarks/responsiveness.md, where napari alone, repainting the
    three layers Fine-tune shows, takes as long under the same load. The preparation before
    the first step is printed, not asserted.) The warm-up run's closing check is waited for: it used to overlap
    the measured run, and its segmentation and display made that run's longest gaps (146-236 ms
    printed in three runs on a 2-core Xeon, 35-63 ms once it was waited for)."""
    viewer = viewer_with_image
    painted_data, _ = top_half(nuclei_image[1])
    paint(viewer, painted_data)
    widget = finetune_panel(viewer, steps=3)
    wait_job(widget.start())  # warm up: imports, the first model load, the first layers
    qtbot.waitUntil(lambda: not widget.preview.runner.busy, timeout=30_000)  # its check
    # the layers Fine-tune shows by default: the image, the painted cells, the preview
    floor = _repaint_floor(qtbot, viewer.layers["nuclei preview labels"])

    widget.steps.value = 25
    _, started, ended, ticks = run_with_ticks(widget.start)
    training = widget.live.training_started
    assert started < training < ended
    during = ticks[(ticks >= training) & (ticks <= ended)]
    gaps = np.diff(np.concatenate([[training], during]))
    before = ticks[(ticks >= started) & (ticks <= training)]
    preparing = np.diff(np.concatenate([[started], before, during[:1]]))
    print(
        f"\nQTimer during Fine-tune ({1000 * (ended - training):.0f} ms of training, "
        f"{len(during)} ticks): max gap {1000 * gaps.max():.0f} ms; while preparing "
        f"({1000 * (training - started):.0f} ms): {1000 * preparing.max():.0f} ms; napari's "
        f"repaint floor {1000 * floor:.0f} ms"
    )
    assert len(during) >= 5
    assert gaps.max() <= max(0.250, 1.25 * floor)


@pytest.mark.parametrize("live_layers", [False, True])
def test_the_teaching_layers_are_hidden_unless_asked_and_not_refreshed_while_hidden(
    viewer_with_image, nuclei_image, wait_job, qtbot, errors, live_layers
):
    """The weight map and the augmented tile are added hidden unless "show weight map and
    augmented tiles" is ticked (each visible layer costs the GUI thread a repaint on a machine
    without a GPU). A hidden tile is not refreshed: the newest waits, and is shown when the
    user opens either of its layers."""
    from napari_unet.engine.events import AugmentationSample

    viewer = viewer_with_image
    painted_data, _ = top_half(nuclei_image[1])
    paint(viewer, painted_data)
    widget = finetune_panel(viewer, steps=12, live_layers=live_layers)
    wait_job(widget.start())
    qtbot.waitUntil(lambda: not widget.preview.runner.busy, timeout=30_000)
    assert errors == []
    teaching = ["painted weight map", "augmented tile", "augmented tile labels"]
    assert [viewer.layers[name].visible for name in teaching] == [live_layers] * 3
    assert viewer.layers["nuclei preview labels"].visible  # the preview is always shown

    tile, tile_labels = viewer.layers["augmented tile"], viewer.layers["augmented tile labels"]
    updates = []
    tile_labels.events.data.connect(lambda event: updates.append(event))
    newest = np.zeros((40, 40), np.int32)
    newest[10:20, 10:20] = 7
    sample = AugmentationSample(
        step=99,
        image=np.ones((40, 40), np.float32),
        labels=newest,
        weights=np.ones((40, 40), np.float32),
        target=(newest > 0).astype(np.int64),
    )
    widget.live.sample = sample
    widget._refresh_display()  # a timer tick
    if live_layers:
        assert updates and np.array_equal(tile_labels.data, newest)
        return
    assert updates == [] and widget.live.sample is sample  # waits while hidden
    tile.visible = True  # the user opens the tile
    assert updates and np.array_equal(tile_labels.data, newest)
    assert widget.live.sample is None
    tile.visible = False
    widget.live_layers.value = True  # ticked after a run: the layers there are shown
    assert [viewer.layers[name].visible for name in teaching] == [True] * 3
    widget.live_layers.value = False
    assert [viewer.layers[name].visible for name in teaching] == [False] * 3
