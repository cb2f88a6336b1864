"""Full garbage collections stay short while jobs run: the heap of before the first job is frozen
(a full collection over napari + torch held the GUI for about 0.5 s on a busy machine) and
handed back when the last job ends."""

import gc
import threading

import pytest

from napari_unet._qt import _gc_pause
from napari_unet._qt._worker import start_job


@pytest.fixture
def no_foreign_freeze():
    gc.unfreeze()
    assert _gc_pause.jobs_running() == 0
    yield
    while _gc_pause.jobs_running():  # a failed test's jobs
        _gc_pause.job_ended()
    gc.unfreeze()


def test_nested_jobs_keep_the_heap_frozen_until_the_last_ends(no_foreign_freeze):
    _gc_pause.job_started()
    frozen = gc.get_freeze_count()
    assert frozen > 0
    _gc_pause.job_started()
    assert gc.get_freeze_count() == frozen  # the second job freezes nothing more
    _gc_pause.job_ended()
    assert gc.get_freeze_count() == frozen
    _gc_pause.job_ended()
    assert gc.get_freeze_count() == 0
    _gc_pause.job_ended()  # an extra end is harmless
    assert _gc_pause.jobs_running() == 0


def test_someone_elses_freeze_is_left_alone(no_foreign_freeze):
    gc.freeze()
    theirs = gc.get_freeze_count()
    _gc_pause.job_started()
    _gc_pause.job_ended()
    assert gc.get_freeze_count() == theirs


def _wait_for(gate):
    yield 1
    gate.wait(10)
    return "done"


def _fail_after(gate):
    gate.wait(10)
    yield 1
    raise ValueError("bad input")


@pytest.mark.parametrize("ending", ["returns", "fails", "is cancelled"])
def test_a_full_collection_during_a_job_walks_only_what_the_job_made(
    make_napari_viewer, wait_job, no_foreign_freeze, ending
):
    make_napari_viewer()
    heap = [[i] for i in range(200_000)]  # a large heap, as napari + torch make
    before = len(gc.get_objects())
    gate = threading.Event()
    job = start_job(_fail_after if ending == "fails" else _wait_for, gate, what="Test job")
    walked = len(gc.get_objects())  # what a full collection walks now
    if ending == "is cancelled":
        job.cancel()
    gate.set()
    wait_job(job, 20_000)
    assert walked < before / 10
    assert gc.get_freeze_count() == 0  # handed back, whatever the end
    assert len(gc.get_objects()) >= len(heap)
