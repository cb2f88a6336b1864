"""Jobs in worker threads: results, errors as notifications, and RuntimeErrors that must end."""

import time

import pytest

from napari_unet._qt._worker import PROGRESS_INTERVAL, JobRuntimeError, start_job

pytestmark = pytest.mark.timing


def _events_then(exc):
    yield 1
    yield 2
    raise exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out of memory"),
        (RuntimeError("something inside torch broke"), "something inside torch broke"),
        (ValueError("labels and image have different shapes"), "different shapes"),
    ],
)
def test_an_error_in_the_worker_ends_the_job_and_tells_the_user(
    make_napari_viewer, wait_job, errors, exc, expected
):
    make_napari_viewer()  # the notification manager of a real viewer
    seen, finished = [], []
    job = start_job(
        _events_then, exc, what="Test job", on_event=seen.append, on_done=finished.append
    )
    wait_job(job, 20_000)  # a RuntimeError used to leave the job running for ever
    assert seen == [1, 2]
    assert finished == [job]
    assert job.error is not None and not job.running
    if isinstance(exc, RuntimeError):
        assert isinstance(job.error, JobRuntimeError)
    assert len(errors) == 1 and expected in errors[0]
    assert errors[0].startswith("Test job failed")


def _count(n):
    yield from range(n)
    return "done"


def test_a_job_returns_its_value(make_napari_viewer, wait_job, errors):
    make_napari_viewer()
    results = []
    job = start_job(_count, 3, what="Counting", on_result=results.append)
    wait_job(job, 20_000)
    assert results == ["done"] and job.result == "done" and errors == []


def test_a_job_that_finishes_while_its_progress_bar_updates(make_napari_viewer):
    """napari's progress bar processes Qt events while it updates, so the worker's ``finished``
    can be handled in the middle of an update and close the bar (a cancel on a busy laptop)."""
    from napari_unet._qt._worker import Job
    from napari_unet.engine.events import TileDone

    make_napari_viewer()
    job = Job(_count, 3, what="Counting")
    bar = job.pbar
    original = bar.set_description

    def finish_meanwhile(*args, **kwargs):
        original(*args, **kwargs)
        job._finished()  # what processEvents() may run here

    bar.set_description = finish_meanwhile
    job._yielded(TileDone(done=1, total=4, plane=0, n_planes=2))
    job._yielded(TileDone(done=2, total=4, plane=1, n_planes=2))
    assert job.done and job.pbar is None


def _tiles(n, seconds):
    """A job of ``n`` small tiles of about ``seconds`` of numpy work each."""
    import numpy as np

    from napari_unet.engine.events import TileDone

    rng = np.random.default_rng(0)
    a = rng.random((96, 96))
    for i in range(n):
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            a = np.sort(a, axis=1)
        yield TileDone(done=i + 1, total=n, plane=i // 10, n_planes=n // 10)
    return n


def _timed(wait_job, show_progress):
    """Run a job of 400 tiles; return its seconds and the CPU seconds each call into napari's
    progress bar took on the main thread.

    CPU time of the main thread, not wall time: with more busy processes than cores, a call
    that is descheduled half-way (for 100 ms or more) would otherwise be charged for the
    other processes' work."""
    started = time.perf_counter()
    job = start_job(_tiles, 400, 0.002, what="Tiles", show_progress=show_progress)
    calls = []
    if job.pbar is not None:
        for name in ("update", "set_description"):
            real = getattr(job.pbar, name)

            def timed(*args, _real=real):
                t0 = time.thread_time()
                _real(*args)
                calls.append(time.thread_time() - t0)

            setattr(job.pbar, name, timed)
    wait_job(job, 60_000)
    return time.perf_counter() - started, calls


def test_the_progress_bar_costs_little(make_napari_viewer, wait_job, errors, cpu_load):
    """400 tiles of 2 ms while both cores are busy with other work: napari's progress bar
    (which processes events while it redraws) is updated a few times a second, not per tile,
    and its calls take under 5 % of the job's time. (Job times with and without the bar are
    printed; under load they vary by more than the bar's cost, so they are not compared.)"""
    make_napari_viewer()
    _timed(wait_job, True)  # warm-up
    for _ in range(2):
        seconds, calls = _timed(wait_job, True)
        without, _ = _timed(wait_job, False)
        print(
            f"\njob {seconds:.2f} s with the progress bar ({len(calls)} calls, "
            f"{1000 * sum(calls):.0f} ms in them), {without:.2f} s without"
        )
        assert len(calls) <= 2 * (seconds / PROGRESS_INTERVAL + 2)
        assert sum(calls) <= 0.05 * seconds
    assert errors == []


def test_a_model_file_error_is_named_even_before_the_checkpoint_facade_is_imported(monkeypatch):
    """The engine raises CheckpointError from napari_unet.engine.checkpoint_format; the loaders
    never import napari_unet.engine.checkpoint, so the message must not depend on it."""
    import sys

    from napari_unet._qt._worker import user_message
    from napari_unet.engine.checkpoint_format import CheckpointError

    monkeypatch.delitem(sys.modules, "napari_unet.engine.checkpoint", raising=False)
    message = user_message(CheckpointError("the model file m.pt is empty"), "Segmentation")
    assert message == "Segmentation failed: the model file cannot be used: the model file m.pt is empty."
