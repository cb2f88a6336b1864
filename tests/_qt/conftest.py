"""Qt tests run a real napari viewer; they need a display (pytest-xvfb starts Xvfb).

Fixtures, built in layers: a tiny U-Net trained once per session on synthetic nuclei and saved
as a model file; a viewer holding a small synthetic image; helpers to wait for jobs and to catch
the error notifications the widgets show.
"""

from __future__ import annotations

import numpy as np
import pytest

TINY_STEPS = 60


@pytest.fixture(scope="session")
def tiny_model_path(request):
    """A depth-2, 8-channel U-Net trained briefly on synthetic nuclei (16 px), as a model file.

    Kept in pytest's cache between runs (retrained when the cache is cleared or the file no
    longer loads).
    """
    import torch

    from napari_unet.engine.checkpoint import CheckpointError, load_checkpoint

    cached = request.config.cache.mkdir("napari_unet") / f"tiny_{TINY_STEPS}.pt"
    if cached.is_file():
        try:
            load_checkpoint(cached)
            return cached
        except CheckpointError:
            cached.unlink()

    from napari_unet.engine.checkpoint import save_checkpoint
    from napari_unet.engine.model import UNet, UNetConfig
    from napari_unet.engine.synthetic import synthetic_nuclei
    from napari_unet.engine.training import TrainConfig, train

    torch.manual_seed(0)
    image, labels = synthetic_nuclei((128, 128), n_cells=14, diameter=16.0, rng=3)
    net = UNet(UNetConfig(depth=2, base_channels=8))
    config = TrainConfig(
        steps=TINY_STEPS,
        lr=1e-2,
        val_fraction=0,
        tile_size=48,
        sample_every=0,
        augment_strength=0.3,
    )
    result = train(net, image, labels, config=config, device="cpu")
    save_checkpoint(cached, result.model, normalization={"low": 1.0, "high": 99.8})
    return cached


@pytest.fixture
def tiny_entry(tiny_model_path):
    """The tiny model as a session entry (a file: every use loads its own copy)."""
    from napari_unet._qt._session import ModelEntry

    return ModelEntry("tiny test model", str(tiny_model_path), kind="file")


@pytest.fixture
def nuclei_image():
    """A (128, 128) uint16 image of 16 px nuclei and its labels."""
    from napari_unet.engine.synthetic import synthetic_nuclei

    return synthetic_nuclei((128, 128), n_cells=14, diameter=16.0, rng=7)


@pytest.fixture
def viewer_with_image(make_napari_viewer, nuclei_image, tiny_entry):
    """A viewer with the nuclei image, whose session model is the tiny model."""
    from napari_unet._qt._session import session_for

    viewer = make_napari_viewer()
    viewer.add_image(nuclei_image[0], name="nuclei", scale=(0.5, 0.5), translate=(3.0, 4.0))
    session_for(viewer).set_current(tiny_entry)
    return viewer


@pytest.fixture
def long_finetune(viewer_with_image, nuclei_image):
    """A Fine-tune panel on ``viewer_with_image`` with its cells painted in 'painted', set for
    a long run (5000 steps, no time limit, no previews, 48 px tiles on the CPU); not started."""
    from napari_unet._qt.finetune_widget import FineTuneWidget

    viewer_with_image.add_labels(
        np.asarray(nuclei_image[1], np.int32), name="painted", scale=(0.5, 0.5),
        translate=(3.0, 4.0),
    )  # fmt: skip
    widget = FineTuneWidget(viewer_with_image)
    widget.steps.value, widget.minutes.value = 5000, 0
    widget.tile_size.value, widget.device.value = 48, "cpu"
    widget.preview_every.value = 0
    return widget


@pytest.fixture
def errors(monkeypatch):
    """The error messages shown to the user (napari notifications), in order."""
    messages: list[str] = []
    import napari_unet._qt._worker as worker_module

    real = worker_module.show_error

    def record(message: str) -> None:
        messages.append(message)
        real(message)

    monkeypatch.setattr(worker_module, "show_error", record)
    monkeypatch.setattr("napari.utils.notifications.show_error", record)
    return messages


def wait_for(qtbot, job, timeout: int = 60_000) -> None:
    """Wait until ``job`` (a napari_unet._qt._worker.Job) has finished."""
    assert job is not None
    qtbot.waitUntil(lambda: job.done, timeout=timeout)


@pytest.fixture
def wait_job(qtbot):
    return lambda job, timeout=60_000: wait_for(qtbot, job, timeout)


@pytest.fixture
def run_with_ticks(qtbot):
    """``run_with_ticks(start)``: call ``start()`` (it returns a job) while a 10 ms QTimer ticks
    on the main thread, wait for the job, and return ``(job, started, ended, ticks)``: the
    perf_counter seconds of the click, of the job's end and of every tick (ticks go on for 50 ms
    after the end, so the result's display is in them too)."""
    import time

    from qtpy.QtCore import QTimer

    def run(start):
        ticks: list[float] = []
        timer = QTimer()
        timer.setInterval(10)
        timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
        timer.start()
        qtbot.wait(50)
        started = time.perf_counter()
        job = start()
        wait_for(qtbot, job)
        ended = time.perf_counter()
        qtbot.wait(50)
        timer.stop()
        return job, started, ended, np.array(ticks)

    return run


@pytest.fixture
def stack_image(nuclei_image):
    """A (12, 128, 128) stack: the nuclei image shifted plane by plane."""
    image = nuclei_image[0]
    return np.stack([np.roll(image, 5 * i, axis=1) for i in range(12)])


@pytest.fixture
def cpu_load():
    """Two processes that keep both cores of a small machine busy while the test runs (a
    laptop doing other work); they end with the test."""
    import subprocess
    import sys

    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    yield burners
    for process in burners:
        process.kill()
        process.wait()


@pytest.fixture
def warnings_shown(monkeypatch):
    """The warning notifications the Fine-tune panel shows, in order."""
    import napari_unet._qt.finetune_widget as module

    shown: list[str] = []
    monkeypatch.setattr(module, "show_warning", shown.append)
    return shown
