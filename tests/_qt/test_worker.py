"""Jobs in worker threads: results, errors as notifications, and RuntimeErrors that must end."""

import pytest

from napari_unet._qt._worker import JobRuntimeError, start_job

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
