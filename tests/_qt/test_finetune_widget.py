"""The Fine-tune widget in a real viewer: live layers, a falling loss, Stop, Save, errors."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet._qt._segment_call import engine_options, segment_call
from napari_unet._qt._session import ModelEntry, session_for
from napari_unet._qt.finetune_widget import FineTuneWidget, WeightMapReady
from napari_unet._qt.segment_widget import MODEL_FILE, SegmentWidget

GEOMETRY = {"scale": (0.5, 0.5), "translate": (3.0, 4.0)}  # as the image of viewer_with_image


def _widget(viewer, *, steps, preview_every=0, **settings):
    """A Fine-tune widget set up for fast CPU runs on the 128 x 128 test image."""
    widget = FineTuneWidget(viewer)
    widget.steps.value = steps
    widget.tile_size.value = 48
    widget.augment.value = 0.3
    widget.device.value = "cpu"
    widget.preview_every.value = preview_every
    for name, value in settings.items():
        getattr(widget, name).value = value
    return widget


def _drain(generator):
    """Run an engine generator to its end and return what it returns."""
    while True:
        try:
            next(generator)
        except StopIteration as stop:
            return stop.value


def _paint(viewer, data, name="painted"):
    return viewer.add_labels(np.asarray(data, np.int32), name=name, **GEOMETRY)


def _top_half(truth):
    """The cells that reach into rows 0-63, painted whole; and the region rows 0-63."""
    ids = np.unique(truth[:64])
    painted = np.where(np.isin(truth, ids[ids > 0]), truth, 0)
    rectangle = np.array([[0.0, 0.0], [0.0, 128.0], [64.0, 128.0], [64.0, 0.0]])
    return painted, rectangle


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
    painted_data, rectangle = _top_half(nuclei_image[1])
    painted = _paint(viewer, painted_data)
    shapes = viewer.add_shapes([rectangle], shape_type="rectangle", name="regions", **GEOMETRY)
    before = {name: np.array(viewer.layers[name].data, copy=True) for name in ("nuclei", "painted")}
    shapes_before = [np.array(s, copy=True) for s in shapes.data]

    widget = _widget(viewer, steps=40, preview_every=20, lr=3e-3)
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


@pytest.mark.timing
def test_stop_keeps_the_model_and_segment_uses_it(
    viewer_with_image, nuclei_image, wait_job, qtbot, errors
):
    """Stop during a long run, after a preview computed from a snapshot while training went
    on: the model of the last completed step becomes current and the Segment widget uses it."""
    viewer = viewer_with_image
    image_data = viewer.layers["nuclei"].data.copy()
    painted = _paint(viewer, nuclei_image[1])
    segment = SegmentWidget(viewer)
    segment.min_confidence.value = 0.0  # the tiny test model is unsure of every cell
    widget = _widget(viewer, steps=500)
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
    expected = _drain(
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


def test_save_writes_a_loadable_model_and_asks_before_replacing(
    viewer_with_image, nuclei_image, wait_job, tmp_path, monkeypatch, errors, qtbot
):
    from napari_unet.engine.api import load_model

    viewer = viewer_with_image
    _paint(viewer, nuclei_image[1])
    widget = _widget(viewer, steps=3)
    wait_job(widget.start())
    # the closing check adds its scores to the status line when it ends: before the saves
    qtbot.waitUntil(lambda: not widget.preview.runner.busy, timeout=30_000)
    asked: list = []
    chosen = {"path": str(tmp_path / "fine-tuned")}  # the suffix is added
    answer = {"replace": False}
    monkeypatch.setattr(widget, "ask_save_path", lambda: chosen["path"])
    monkeypatch.setattr(
        widget, "confirm_overwrite", lambda path: asked.append(path) or answer["replace"]
    )

    wait_job(widget.save_model())
    path = tmp_path / "fine-tuned.pt"
    assert asked == []  # a new file: nothing to confirm
    net, checkpoint = load_model(path)
    kept_net, kept = widget.result_entry.source
    for name, tensor in kept_net.state_dict().items():
        assert np.array_equal(net.state_dict()[name].numpy(), tensor.numpy())
    # the model started without a diameter, so it keeps the painted cells' (about 16 px)
    assert 10 < checkpoint.diameter == kept.diameter < 25
    assert checkpoint.training["steps_done"] == 3
    assert checkpoint.extra["fine_tuned_on"] == "painted"
    assert checkpoint.extra["fine_tuned_from"] == "tiny test model"
    assert [h["step"] for h in checkpoint.history if "loss" in h] == [1, 2, 3]

    # an existing file is replaced only after the user said yes
    other = tmp_path / "other.pt"
    other.write_bytes(b"not a model")
    chosen["path"] = str(other)
    assert widget.save_model() is None
    assert asked == [other] and other.read_bytes() == b"not a model"
    answer["replace"] = True
    wait_job(widget.save_model())
    assert len(asked) == 2
    assert load_model(other)[1].training["steps_done"] == 3

    assert widget.status.value == f"saved {other}"

    # the dialog cancelled: nothing happens
    chosen["path"] = ""
    assert widget.save_model() is None
    assert errors == []

    # a save that fails (a read-only folder; the tests may run as root, who may write anywhere)
    # is said in the status, which said 'saving …' for ever
    import napari_unet.engine.checkpoint as checkpoint_module

    def refused(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", refused)
    chosen["path"] = str(tmp_path / "read-only" / "m.pt")
    wait_job(widget.save_model())
    assert errors[-1].startswith("Saving the model failed: [Errno 13] Permission denied")
    assert widget.status.value == "not saved: m.pt (see the notification)"


def test_errors_reach_the_user(viewer_with_image, nuclei_image, wait_job, errors):
    viewer = viewer_with_image
    session = session_for(viewer)
    start_entry = session.current
    widget = _widget(viewer, steps=3)

    assert widget.start() is None  # no Labels layer yet
    assert "Labels layer" in errors[-1]
    assert widget.save_model() is None
    assert "fine-tune a model first" in errors[-1]

    empty = _paint(viewer, np.zeros((128, 128)), name="empty")
    widget.labels.value = empty
    assert widget.start() is None
    assert errors[-1].startswith("Fine-tuning failed: no painted cells in 'empty'")

    small = _paint(viewer, nuclei_image[1][:64, :64], name="small")
    widget.labels.value = small
    assert widget.start() is None
    assert "different shapes" in errors[-1] and "(128, 128)" in errors[-1]

    painted = _paint(viewer, nuclei_image[1])
    widget.labels.value = painted
    widget.regions.value = viewer.add_shapes(name="no regions yet")
    assert widget.start() is None
    assert "has no shape on this plane" in errors[-1]
    widget.regions.value = None

    widget.image.value = viewer.add_image(np.zeros((2, 128, 128), np.uint8), name="two")
    widget.axes.value = "CYX"  # two channels for a one-channel model
    n_errors = len(errors)
    job = widget.start()
    wait_job(job)
    assert job.error is not None and len(errors) == n_errors + 1
    assert errors[-1].startswith("Fine-tuning failed:") and "channel" in errors[-1]
    assert session.current is start_entry  # nothing was kept
    assert widget.start_button.isEnabled() and not widget.stop_button.isEnabled()
    assert "failed" in widget.status.value
    assert "painted weight map" in viewer.layers  # shown before the model saw the image
    assert np.array_equal(painted.data, nuclei_image[1]) and not empty.data.any()


def test_the_current_plane_of_a_stack_is_used(viewer_with_image, nuclei_image, stack_image):
    viewer = viewer_with_image
    stack = viewer.add_image(stack_image[:3], name="stack")
    painted = np.zeros((3, 128, 128), np.int32)
    painted[1] = nuclei_image[1]
    labels = viewer.add_labels(painted, name="stack cells")
    widget = _widget(viewer, steps=3)
    widget.image.value = stack
    widget.labels.value = labels
    viewer.dims.set_current_step(0, 1)
    request = widget.training_request()
    np.testing.assert_array_equal(request.labels, nuclei_image[1])
    np.testing.assert_array_equal(np.asarray(request.image), stack_image[1])
    assert request.regions is None and request.channel_axis is None
    assert request.config.steps == 3 and request.config.tile_size == 48

    # painted on another plane than the one on screen: the refusal names the painted planes
    viewer.dims.set_current_step(0, 0)
    with pytest.raises(
        ValueError,
        match=r"no painted cells in 'stack cells' on plane \(0,\), the plane on screen; cells "
        r"are painted on plane \(1,\): show one of them",
    ):
        widget.training_request()
    labels.data = np.zeros_like(painted)
    with pytest.raises(ValueError, match=r"on plane \(0,\); paint a few cells"):
        widget.training_request()


def test_planes_on_the_last_axis_take_the_plane_on_screen(
    viewer_with_image, nuclei_image, stack_image
):
    """A (Y, X, Z) image, shown Z-sliced (dims order 2, 0, 1): axes YXZ are detected and the
    plane at the Z slider is the one trained on."""
    viewer = viewer_with_image
    data = np.moveaxis(stack_image[:2], 0, -1)  # (128, 128, 2); 3 would be taken for RGB
    layer = viewer.add_image(data, name="yxz")
    painted = _paint(viewer, nuclei_image[1])
    widget = _widget(viewer, steps=3)
    widget.image.value = layer
    widget.labels.value = painted
    assert widget.axes.value == "YXZ"
    viewer.dims.order = (2, 0, 1)
    viewer.dims.set_point(2, 1.0)  # Z = 1 (world and data agree for this layer)
    request = widget.training_request()
    assert request.channel_axis is None
    np.testing.assert_array_equal(np.asarray(request.image), stack_image[1])


def test_labels_with_planes_last_give_the_plane_on_screen(
    viewer_with_image, nuclei_image, stack_image
):
    """(Y, X, Z) labels painted over a (Y, X, Z) image: the painted plane at the Z slider is
    read in the labels' own axes, and the run's weight map lies on that plane."""
    viewer = viewer_with_image
    layer = viewer.add_image(np.moveaxis(stack_image[:2], 0, -1), name="yxz")
    painted = np.zeros((128, 128, 2), np.int32)
    painted[:, :, 1] = nuclei_image[1]
    labels = viewer.add_labels(painted, name="yxz cells")
    widget = _widget(viewer, steps=3)
    widget.image.value = layer
    widget.labels.value = labels
    viewer.dims.order = (2, 0, 1)
    viewer.dims.set_point(2, 1.0)
    request = widget.training_request()
    np.testing.assert_array_equal(request.labels, nuclei_image[1])
    np.testing.assert_array_equal(np.asarray(request.image), stack_image[1])
    assert widget.label_plane == (slice(None), slice(None), 1)
    assert request.regions is None

    # a region drawn on the plane shown (vertices in the labels' own axes: Y, X, Z = 1) counts
    # there only; one drawn on plane 0 does not
    on_plane = np.array([[10, 20, 1], [10, 60, 1], [50, 60, 1], [50, 20, 1]], float)
    elsewhere = np.array([[70, 70, 0], [70, 90, 0], [90, 90, 0], [90, 70, 0]], float)
    widget.regions.value = viewer.add_shapes(
        [on_plane, elsewhere], shape_type="rectangle", name="yxz regions"
    )
    request = widget.training_request()
    region = np.asarray(request.regions)
    assert region.shape == (128, 128)
    assert region[30, 40] and not region[5, 40] and not region[30, 70]
    assert not region[80, 80]  # drawn on plane 0
    assert 30 * 30 <= region.sum() <= 42 * 42

    viewer.dims.set_point(2, 0.0)
    with pytest.raises(
        ValueError, match=r"'yxz cells' on plane \(0,\), the plane on screen; .* plane \(1,\):"
    ):
        widget.training_request()


def test_a_channel_first_image_trains_on_all_its_channels(
    viewer_with_image, nuclei_image, wait_job, qtbot, errors
):
    """A (C, Y, X) layer with "first axis: channels": the request holds every channel of the
    plane, whichever channel the viewer shows, and a 2-channel model fine-tunes and previews."""
    import torch

    from napari_unet.engine.model import UNet, UNetConfig

    viewer = viewer_with_image
    data = np.stack([nuclei_image[0], nuclei_image[0][:, ::-1]])  # (2, 128, 128)
    two = viewer.add_image(data, name="two channels")
    painted = _paint(viewer, nuclei_image[1])
    widget = _widget(viewer, steps=3)
    widget.image.value = two
    widget.labels.value = painted
    assert not widget.axes.native.isHidden()  # the choice is offered for this layer
    viewer.dims.set_current_step(0, 1)  # the viewer shows the second channel

    request = widget.training_request()  # axes ZYX: planes (the default)
    assert request.channel_axis is None
    np.testing.assert_array_equal(np.asarray(request.image), data[1])

    widget.axes.value = "CYX"
    request = widget.training_request()
    assert request.channel_axis == -1
    np.testing.assert_array_equal(np.asarray(request.image), np.moveaxis(data, 0, -1))
    np.testing.assert_array_equal(request.labels, nuclei_image[1])

    torch.manual_seed(0)
    net = UNet(UNetConfig(depth=2, base_channels=4, in_channels=2))
    session_for(viewer).set_current(ModelEntry("2-channel net", lambda: net, kind="file"))
    job = widget.start()
    wait_job(job)
    assert job.error is None and errors == []
    assert widget.run.steps_done == 3
    widget.refresh_preview()
    qtbot.waitUntil(lambda: "two channels preview labels" in viewer.layers, timeout=30_000)
    assert viewer.layers["two channels preview labels"].data.shape == (128, 128)
    assert errors == []

    widget.image.value = viewer.layers["nuclei"]
    assert widget.axes.native.isHidden()  # not for a 2D layer


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
    _paint(viewer, nuclei_image[1])
    widget = _widget(viewer, steps=30)
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
    updates.timeout.connect(lambda: setattr(layer, "data", rng.integers(0, 20, shape).astype(dtype)))
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
    issue's goal is 100 ms and Segment meets it; Fine-tune does not: 114-144 ms in
    docs/benchmarks/responsiveness.md, where napari alone, repainting the six layers Fine-tune
    shows, reaches 158 ms under the same load. The preparation before the first step is
    printed, not asserted.) The warm-up run's closing check is waited for: it used to overlap
    the measured run, and its segmentation and display made that run's longest gaps (146-236 ms
    printed in three runs on a 2-core Xeon, 35-63 ms once it was waited for)."""
    viewer = viewer_with_image
    painted_data, _ = _top_half(nuclei_image[1])
    _paint(viewer, painted_data)
    widget = _widget(viewer, steps=3)
    wait_job(widget.start())  # warm up: imports, the first model load, the first layers
    qtbot.waitUntil(lambda: not widget.preview.runner.busy, timeout=30_000)  # its check
    floor = _repaint_floor(qtbot, viewer.layers["augmented tile labels"])

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


@pytest.fixture
def warnings_shown(monkeypatch):
    """The warning notifications the Fine-tune panel shows, in order."""
    import napari_unet._qt.finetune_widget as module

    shown: list[str] = []
    monkeypatch.setattr(module, "show_warning", shown.append)
    return shown


def test_regions_are_preselected_and_their_absence_is_warned(
    viewer_with_image, nuclei_image, wait_job, warnings_shown
):
    viewer = viewer_with_image
    _paint(viewer, nuclei_image[1])
    widget = _widget(viewer, steps=3)
    assert widget.regions.value is None  # no Shapes layer: (none), worded as everywhere
    assert [widget.regions.native.itemText(i) for i in range(widget.regions.native.count())] == [
        "(none)"
    ]
    shapes = viewer.add_shapes(name="regions")
    assert _widget(viewer, steps=3).regions.value is shapes

    widget = _widget(viewer, steps=1, regions=None)
    wait_job(widget.start())
    assert len(warnings_shown) == 1 and "no annotated regions" in warnings_shown[0]
    assert "no annotated regions" in widget.notes.value


def test_degenerate_labels_are_warned(viewer_with_image, nuclei_image, wait_job, warnings_shown):
    """Every cell painted with the same id: the user is told before the model learns it."""
    viewer = viewer_with_image
    same_id = (nuclei_image[1] > 0).astype(np.int32)
    widget = _widget(viewer, steps=2)
    widget.labels.value = _paint(viewer, same_id, name="one id")
    wait_job(widget.start())
    assert any("label 1 covers" in text for text in warnings_shown), warnings_shown
    assert "label 1 covers" in widget.notes.value


def test_labels_placed_elsewhere_than_the_image_are_warned(
    viewer_with_image, nuclei_image, wait_job, warnings_shown
):
    """A Labels layer of the image's shape made at scale 1 (napari's New labels with no layer
    selected) over the image at scale 0.5: the cells painted over the image lie at twice their
    pixel indices, and training paired the pixels one to one without a word."""
    viewer = viewer_with_image
    plain = viewer.add_labels(np.asarray(nuclei_image[1], np.int32), name="plain")
    widget = _widget(viewer, steps=1, labels=plain, regions=None)
    (text,) = widget.training_request().warnings
    assert text.startswith("the labels 'plain' lie elsewhere than the image 'nuclei'")
    assert "scale (1, 1) against (0.5, 0.5), translate (0, 0) against (3, 4)" in text
    wait_job(widget.start())
    assert any("lie elsewhere" in t for t in warnings_shown) and "lie elsewhere" in widget.notes.value

    widget.labels.value = _paint(viewer, nuclei_image[1])  # placed as the image
    assert widget.training_request().warnings == ()
    moved = _paint(viewer, nuclei_image[1], name="moved")
    moved.rotate = 90
    widget.labels.value = moved
    assert "(rotate" in widget.training_request().warnings[0]


def test_a_fine_tuned_model_that_scores_worse_is_not_recommended(
    viewer_with_image, nuclei_image, wait_job, qtbot, monkeypatch, errors
):
    """The closing check found fewer painted cells and more extra objects than the start
    model, and the status still said "Click 'Use for Segment' to segment with it"."""
    import napari_unet._qt._finetune_job as job_module
    from napari_unet._qt._finetune_checks import PaintedScore

    scores = iter([PaintedScore(found=10, painted=12, extra=0), PaintedScore(4, 12, 3)])
    monkeypatch.setattr(job_module, "painted_score", lambda *args: next(scores))
    viewer = viewer_with_image
    _paint(viewer, nuclei_image[1])
    widget = _widget(viewer, steps=2)
    wait_job(widget.start())
    qtbot.waitUntil(lambda: "Painted cells" in widget.status.value, timeout=30_000)
    status = widget.status.value
    assert "before: 10 of 12 painted cells found, 0 extra objects" in status
    assert "after: 4 of 12 painted cells found, 3 extra objects" in status
    assert "The start model did better (2 errors against 11): keep it" in status
    assert "Click 'Use for Segment' to segment" not in status
    assert widget.use_button.isEnabled() and errors == []  # the user may still judge otherwise


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
    _paint(viewer, nuclei_image[1])
    widget = _widget(viewer, steps=2)
    job = widget.start()
    qtbot.waitUntil(lambda: "choosing the minimum confidence" in widget.progress.bar.format())
    qtbot.wait(600)  # display ticks do not put the steps back
    assert "choosing the minimum confidence" in widget.progress.bar.format()
    wait_job(job)
    per_step = float(widget.status.value.split(" s per step")[0].rsplit(", ", 1)[1])
    slowest = max(h["seconds"] for h in widget.run.history if "loss" in h)
    assert widget.status.value.startswith("done after step 2")
    assert per_step < slowest + 1.0  # the 5 s after the steps made it 2.5 s more


def test_a_time_budget_ends_the_run(viewer_with_image, nuclei_image, wait_job, qtbot):
    """A 3 s budget with 100000 steps: the run stops after the step that reaches it, the
    progress shows seconds per step and the time left, and the plot's axis ends at the steps
    done."""
    viewer = viewer_with_image
    _paint(viewer, nuclei_image[1])
    widget = _widget(viewer, steps=100_000, minutes=0.05)
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


def test_removing_the_image_stops_the_run(viewer_with_image, nuclei_image, wait_job, qtbot):
    viewer = viewer_with_image
    _paint(viewer, nuclei_image[1])
    widget = _widget(viewer, steps=5000)
    job = widget.start()
    qtbot.waitUntil(lambda: widget.run.steps_done > 0, timeout=30_000)
    viewer.layers.remove("nuclei")
    wait_job(job)
    assert job.cancelled
    assert widget.status.value.startswith(f"stopped after step {widget.run.final_step}")
    # the reason stays: the final line replaced "stopping: 'nuclei' was removed…"
    assert widget.status.value.endswith(": 'nuclei' was removed")
    assert widget.start_button.isEnabled()


def test_the_minimum_confidence_chosen_on_the_painted_cells_follows_the_model(
    viewer_with_image, nuclei_image, wait_job, monkeypatch, segment_calls, tmp_path
):
    """After a fine-tune the panel chooses the model's minimum confidence on the painted cells
    (the engine's choice is replaced by a known one here; the choice itself is tested in
    tests/engine/test_confidence_calibration.py): it is shown, stored in the model, taken by
    Segment's control when the model is used, and read back from a saved file."""
    from napari_unet.engine import confidence_calibration
    from napari_unet.engine.checkpoint import read_checkpoint_metadata

    seen: list[float] = []

    def choose(scored, *, previous, candidates=confidence_calibration.CANDIDATES):
        seen.append(previous)
        cells = int(sum(len(np.unique(a[a > 0])) for _, _, a, _ in scored))
        scores = {0.1: 0.9, 0.35: 0.4}
        return confidence_calibration.ConfidenceCalibration(0.1, scores, cells, previous)

    monkeypatch.setattr(confidence_calibration, "choose_min_confidence", choose)
    viewer = viewer_with_image
    _paint(viewer, nuclei_image[1])
    segment = SegmentWidget(viewer)
    assert segment.min_confidence.value == pytest.approx(0.35)
    segment.min_confidence.value = 0.3
    widget = _widget(viewer, steps=2)
    wait_job(widget.start())

    assert seen == [pytest.approx(0.3)]  # a tie would keep what Segment segments with
    assert "minimum confidence 0.1, chosen on" in widget.notes.value
    entry = widget.result_entry
    assert entry.min_confidence == 0.1
    assert entry.source[1].extra["instance_step"]["min_confidence"] == 0.1
    assert segment.min_confidence.value == pytest.approx(0.3)  # not current yet
    widget.use_button.click()
    assert segment.min_confidence.value == pytest.approx(0.1)
    wait_job(segment.segment())
    assert segment_calls[-1]["min_confidence"] == pytest.approx(0.1)

    # saved and picked as a file, the model brings its value with it
    path = tmp_path / "tuned.pt"
    monkeypatch.setattr(widget, "ask_save_path", lambda: str(path))
    wait_job(widget.save_model())
    assert read_checkpoint_metadata(path).extra["instance_step"]["min_confidence"] == 0.1
    segment.min_confidence.value = 0.5
    segment.model.value = MODEL_FILE
    segment.model_file.value = path
    assert segment.selected_model().min_confidence == 0.1
    assert segment.min_confidence.value == pytest.approx(0.1)


def test_lines_and_paths_are_not_annotated_regions(viewer_with_image, nuclei_image, errors):
    """A line or a path drawn in the regions layer encloses no area: it is left out (it used to
    become a one-pixel-wide region, so that almost nothing was taught); a layer of lines only
    is refused with a sentence, like an empty one."""
    from napari_unet._qt._annotations import regions_mask

    viewer = viewer_with_image
    painted = _paint(viewer, nuclei_image[1])
    lines = viewer.add_shapes(
        [np.array([[10.0, 10.0], [100.0, 100.0]]), np.array([[5.0, 5.0], [5.0, 90.0], [60.0, 50.0]])],
        shape_type=["line", "path"],
        name="lines",
        **GEOMETRY,
    )
    widget = _widget(viewer, steps=3, regions=lines)
    assert widget.start() is None
    assert "has no shape on this plane (lines and paths enclose no area)" in errors[-1]

    lines.add_rectangles(np.array([[0.0, 0.0], [64.0, 128.0]]))
    mask = regions_mask(lines, painted, (), (128, 128))
    expected = np.zeros((128, 128), bool)
    expected[:65, :] = True
    assert np.abs(mask.astype(int) - expected).sum() <= 128 + 1  # the rectangle alone, to its edge
    assert not mask[100, 100] and not mask[80, 80]  # on the line, below the rectangle


def test_regions_outside_the_labels_are_refused(viewer_with_image, nuclei_image, errors):
    """A region drawn outside the image (in another layer's coordinates, or far off) covers no
    pixel: the run trained silently with no annotated region at all. Now Start refuses it with
    a sentence, like a regions layer with no shape on the plane."""
    viewer = viewer_with_image
    _paint(viewer, nuclei_image[1])
    outside = viewer.add_shapes(
        [np.array([[500.0, 500.0], [600.0, 600.0]])],
        shape_type="rectangle",
        name="far off",
        **GEOMETRY,
    )
    widget = _widget(viewer, steps=3, regions=outside)
    assert widget.start() is None and widget.job is None
    assert errors == [
        "Fine-tuning failed: the regions of 'far off' on this plane cover no pixel of the labels "
        "'painted' (they lie outside them); draw them over the painted cells, or choose (none)."
    ]


def test_closing_the_panel_stops_the_run(viewer_with_image, nuclei_image, wait_job, qtbot, errors):
    """napari takes a closed panel out of its dock without deleting it: the run used to go on
    unseen until its time budget (updating the viewer's layers; its model out of reach). Now
    closing the panel stops it after the step in progress, and nothing more is shown."""
    viewer = viewer_with_image
    _paint(viewer, nuclei_image[1])
    widget = _widget(viewer, steps=5000, minutes=0)
    dock = viewer.window.add_dock_widget(widget)
    job = widget.start()
    qtbot.waitUntil(lambda: widget.run.steps_done > 0, timeout=30_000)
    dock.destroyOnClose()  # the dock's close button
    wait_job(job, timeout=10_000)
    assert job.cancelled and widget.run.steps_done < 5000 and errors == []
    assert widget.status.value.startswith("stopped after step")
    assert "nuclei preview labels" not in viewer.layers


def test_a_broken_model_file_gives_way_before_fine_tuning(
    viewer_with_image, nuclei_image, tmp_path, wait_job, errors, qtbot
):
    """A picked file that is no model failed every Start the same way and stayed the model;
    as in Segment, the panel now goes back to the model used before and says so."""
    viewer = viewer_with_image
    session = session_for(viewer)
    before = session.current
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a model")
    session.set_current(ModelEntry("broken.pt", broken, kind="file"))  # as Segment picks it
    widget = _widget(viewer, steps=2)
    widget.labels.value = _paint(viewer, nuclei_image[1])
    job = widget.start()
    wait_job(job)
    assert job.error is not None and str(broken) in errors[-1]
    assert session.current is before
    assert str(broken) in widget.status.value and f"back to '{before.label}'" in widget.status.value
    wait_job(widget.start())  # the next run trains
    assert widget.result_entry is not None
    qtbot.waitUntil(lambda: not widget.preview.runner.busy, timeout=30_000)  # its check


def test_the_painted_score_counts_with_its_nouns():
    from napari_unet._qt._finetune_checks import PaintedScore

    assert PaintedScore(found=1, painted=1, extra=1).sentence() == (
        "1 of 1 painted cell found, 1 extra object"
    )
    assert PaintedScore(found=4, painted=12, extra=3).sentence() == (
        "4 of 12 painted cells found, 3 extra objects"
    )


def test_an_image_with_nan_is_refused_at_start_by_name(make_napari_viewer, nuclei_image, errors):
    """An image plane with NaN started the run, showed its weight map, and failed in the worker
    with 'image contains NaN or infinite values', naming no layer; now Start refuses it."""
    viewer = make_napari_viewer()
    image = nuclei_image[0].astype(np.float32)
    image[5, 5] = np.nan
    viewer.add_image(image, name="holey")
    viewer.add_labels(np.asarray(nuclei_image[1], np.int32), name="painted")
    widget = _widget(viewer, steps=3)
    assert widget.start() is None
    assert errors == [
        "Fine-tuning failed: the image 'holey' holds NaN or infinite values on this plane; "
        "replace them (e.g. by 0) before fine-tuning."
    ]
    assert "holey weight map" not in [layer.name for layer in viewer.layers]


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
