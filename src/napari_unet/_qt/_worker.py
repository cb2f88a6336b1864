"""Running engine generators off the GUI thread, with a progress bar, Cancel and clear errors.

Every widget starts its work through :func:`start_job`. The job function is a generator that
runs in a worker thread (``napari.qt.threading``): it does its heavy imports there, yields the
engine's typed events and returns a result. The main thread turns events into progress-bar
updates and layer updates (``on_event``), the result into layers (``on_result``), and any
exception into a napari notification with a sentence the user can act on (:func:`user_message`).
Nothing in the worker thread touches Qt or a layer.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_warning

from napari_unet._qt import _gc_pause
from napari_unet.engine.events import STOPPED, BlockDone, StepDone, TileDone, relay

logger = logging.getLogger(__name__)

OOM_MESSAGE = "out of memory on the GPU; try a smaller tile size or the CPU"
#: napari's progress bar processes pending events while it redraws (a job with many small tiles
#: ran about 3x slower with it): it is updated at most this often, in seconds, and at the end
PROGRESS_INTERVAL = 0.25


def _delegate(gen: Generator, stop: threading.Event) -> Generator:
    """Run ``gen`` in the worker thread, yielding its events, and return its value
    (:data:`~napari_unet.engine.events.STOPPED` once ``stop`` is set).

    Checks ``stop`` before every step and then closes ``gen`` *in the worker thread*, so the
    engine's ``finally:`` cleanup (a last checkpoint, moving the model to the CPU, freeing device
    memory) never runs on the GUI thread.
    """
    try:
        return (yield from relay(gen, stop=stop.is_set))
    except RuntimeError as exc:
        raise shield_runtime_error(exc) from exc


class JobRuntimeError(ValueError):
    """A ``RuntimeError`` of a worker job, re-raised as this so that it reaches the user.

    superqt's worker takes a ``RuntimeError`` for "the worker object was deleted": it only warns
    and emits neither ``errored`` nor ``finished``, so the job would never end (torch's
    out-of-memory errors are RuntimeErrors). The message is the reason as the user reads it.
    """


def shield_runtime_error(exc: RuntimeError) -> JobRuntimeError:
    """``exc`` as a :class:`JobRuntimeError` with the sentence :func:`user_message` gives."""
    reason = user_message(exc, "Job").removeprefix("Job failed: ").rstrip(".")
    return JobRuntimeError(reason)


def run_shielded(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``func`` (in a worker thread), turning a ``RuntimeError`` into a
    :class:`JobRuntimeError`."""
    try:
        return func(*args, **kwargs)
    except RuntimeError as exc:
        raise shield_runtime_error(exc) from exc


def _forward(gen: Generator) -> Generator:
    """The worker's generator function: forwards to an existing generator object."""
    return (yield from gen)


def user_message(exc: BaseException, what: str = "The operation") -> str:
    """A sentence for the user that says what went wrong.

    Parameters
    ----------
    exc : the exception raised in the worker thread (or the handler).
    what : the work that failed, e.g. ``"Segmentation"``; starts the sentence when the error is
        unexpected.

    Returns
    -------
    str
        ``"<what> failed: <reason>."``.
    """
    name = type(exc).__name__
    text = str(exc).strip() or name
    if _is_instance(exc, "torch", "OutOfMemoryError") or (
        isinstance(exc, RuntimeError) and "out of memory" in text
    ):
        reason = OOM_MESSAGE
    elif isinstance(exc, MemoryError):
        reason = "out of memory; try a smaller image, a smaller tile size or fewer planes"
    elif _is_instance(exc, "napari_unet.engine.checkpoint_format", "CheckpointError"):
        reason = f"the model file cannot be used: {text}"
    elif isinstance(exc, FileNotFoundError):
        reason = f"file not found: {exc.filename or text}"
    elif isinstance(exc, (ValueError, OSError)):
        reason = text
    else:
        reason = f"{text} ({name})"
    reason = reason.rstrip(".")
    return f"{what} failed: {reason}."


def _is_instance(exc: BaseException, module: str, name: str) -> bool:
    """``isinstance(exc, module.name)`` without importing ``module`` for it: an exception of
    that class can only exist once its module was imported (torch stays out of the GUI
    thread)."""
    cls = getattr(sys.modules.get(module), name, None)
    return isinstance(cls, type) and isinstance(exc, cls)


def notify_error(exc: BaseException, what: str = "The operation") -> str:
    """Show ``exc`` as a napari error notification (and log the traceback); return the message."""
    message = user_message(exc, what)
    logger.error(message, exc_info=(type(exc), exc, exc.__traceback__))
    show_error(message)
    return message


def call_once(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Generator:
    """A generator that calls ``func`` once and returns its value (for :class:`Job`)."""
    return func(*args, **kwargs)
    yield  # unreachable: makes this a generator function


class LatestOnly:
    """Runs one job at a time and, while one runs, keeps only the newest request.

    For interactive previews (sliders): every change asks for a recomputation, but only the
    last one asked for while a job was running is started after it.
    """

    def __init__(self, what: str, *, on_busy: Callable[[bool], None] | None = None) -> None:
        self.what = what
        self.job: Job | None = None
        self._pending: tuple | None = None
        #: called with True when work starts and False when the last request is done
        self.on_busy = on_busy

    def submit(
        self, func: Callable[..., Any], *args: Any, on_result: Callable[[Any], None], **kwargs: Any
    ) -> None:
        """Compute ``func(*args, **kwargs)`` in a worker thread, then call ``on_result``."""
        request = (func, args, kwargs, on_result)
        if self.job is not None and self.job.running:
            self._pending = request
            return
        self._start(request)

    def _start(self, request: tuple) -> None:
        func, args, kwargs, on_result = request
        if self.on_busy is not None:
            self.on_busy(True)
        self.job = start_job(
            call_once,
            func,
            *args,
            what=self.what,
            show_progress=False,
            on_result=on_result,
            on_done=self._done,
            **kwargs,
        )

    def _done(self, _job: Job) -> None:
        request, self._pending = self._pending, None
        if request is not None:
            self._start(request)
        elif self.on_busy is not None:
            try:
                self.on_busy(False)
            except RuntimeError:  # the panel is already gone (viewer closing)
                pass

    def cancel(self) -> None:
        """Drop the waiting request and cancel the running job: no ``on_result`` follows."""
        self._pending = None
        if self.job is not None:
            self.job.cancel()

    @property
    def busy(self) -> bool:
        """Whether a job runs or waits."""
        return (self.job is not None and self.job.running) or self._pending is not None


def tell_user(message: str) -> None:
    """Show a ready-made sentence as a napari error notification."""
    show_error(message)


class Job:
    """One engine generator running in a napari worker thread.

    Create it with :func:`start_job`. The progress bar follows ``TileDone``/``StepDone``
    events. :meth:`cancel` makes the worker close the engine generator at its next ``yield``
    (in the worker thread, so its cleanup never blocks the GUI); the job then ends without
    ``on_result``. Should napari itself abort the worker (``worker.quit()``, e.g. when the viewer
    closes), the generator is closed once the worker has let go of it.

    Attributes
    ----------
    worker : the napari ``GeneratorWorker``; tests wait on ``worker.finished``.
    cancelled : whether the job was stopped by :meth:`cancel`.
    error : the exception the job raised, if any.
    result : the generator's return value, once ``returned`` was emitted.
    returned_at : ``time.perf_counter()`` when the result reached the main thread (before the
        layers were updated), or ``None``.
    """

    def __init__(
        self,
        func: Callable[..., Generator],
        *args: Any,
        what: str,
        description: str | None = None,
        on_event: Callable[[Any], None] | None = None,
        on_result: Callable[[Any], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        on_done: Callable[[Job], None] | None = None,
        show_progress: bool = True,
        **kwargs: Any,
    ) -> None:
        self.what = what
        self.cancelled = False
        self.error: BaseException | None = None
        self.result: Any = None
        self.done = False
        self._aborted_by_napari = False
        self.returned_at: float | None = None
        self._progress_at = 0.0
        self._on_event = on_event
        self._on_result = on_result
        self._on_error = on_error
        self._on_done = on_done
        self._stop = threading.Event()
        self._gen = _delegate(func(*args, **kwargs), self._stop)
        self.worker: GeneratorWorker = create_worker(
            _forward,
            self._gen,
            _start_thread=False,
            _worker_class=GeneratorWorker,
            _ignore_errors=True,  # errors go to _errored -> a notification
        )
        self.pbar = progress(total=0, desc=description or what) if show_progress else None
        self.worker.yielded.connect(self._yielded)
        self.worker.returned.connect(self._returned)
        self.worker.errored.connect(self._errored)
        self.worker.aborted.connect(self._aborted)
        self.worker.finished.connect(self._finished)
        self.worker.warned.connect(self._warned)
        self._warnings_shown: set[str] = set()
        self._holds_gc = False

    # -- control ---------------------------------------------------------------------------
    def start(self) -> Job:
        """Start the worker thread (and keep full garbage collections short until it ends,
        :mod:`~napari_unet._qt._gc_pause`)."""
        _gc_pause.job_started()
        self._holds_gc = True
        try:
            self.worker.start()
        except BaseException:
            self._release_gc()
            raise
        return self

    def _release_gc(self) -> None:
        if self._holds_gc:
            self._holds_gc = False
            _gc_pause.job_ended()

    def cancel(self) -> None:
        """Ask the job to stop at its next ``yield``; ``on_done`` follows once it has."""
        if self.done or self.cancelled:
            return
        self.cancelled = True
        if self.pbar is not None:
            self.pbar.set_description(f"{self.what}: stopping")
        self._stop.set()

    @property
    def running(self) -> bool:
        """True until the worker has finished."""
        return not self.done

    # -- signal handlers (main thread) ---------------------------------------------------
    def _warned(self, showwarning_args: tuple) -> None:
        """A warning raised in the worker thread. superqt catches warnings there and emits
        ``warned``; napari's relay of it to a notification did not fire for these workers
        (napari 0.9.2 with PyQt5: the mixin that connects it comes after ``QRunnable`` in the
        class order), so without this the engine's warnings (e.g. an estimate that fell back to
        the model's scale) reached no one.
        Warnings raised by napari-unet's code become a warning notification, once per message
        and job; others (libraries' deprecations) go to the log."""
        message, category, filename = (str(a) for a in showwarning_args[:3])
        if "napari_unet" not in filename:
            logger.warning("%s in %s: %s", category, self.what, message)
            return
        if message not in self._warnings_shown:
            self._warnings_shown.add(message)
            show_warning(f"{self.what}: {message}")

    def _yielded(self, event: Any) -> None:
        # the job's own handler first: napari's progress bar processes events while it redraws,
        # so after it the job may have ended (and its panel shown the end) already
        if self._on_event is not None and not self.cancelled:
            try:
                self._on_event(event)
            except Exception as exc:  # a failing display update must not kill the job silently
                notify_error(exc, f"{self.what} (display update)")
        if self.pbar is not None:
            self._advance(event)

    def _advance(self, event: Any) -> None:
        # napari's progress bar processes Qt events while it updates, so _finished can run in
        # the middle of this method and close the bar: check it is still open after each call.
        bar = self.pbar
        match event:
            case TileDone(done=done, total=total) | StepDone(step=done, total=total) | BlockDone(
                done=done, total=total
            ):
                pass
            case _:
                return
        now = time.perf_counter()
        if done < total and now - self._progress_at < PROGRESS_INTERVAL:
            return
        self._progress_at = now
        if isinstance(event, TileDone) and event.n_planes > 1:
            bar.set_description(f"{self.what}: plane {event.plane + 1}/{event.n_planes}")
        if self.pbar is not bar:
            return
        if bar.total != total:
            bar.total = total
        if self.pbar is bar and done > bar.n:
            bar.update(done - bar.n)

    def _returned(self, value: Any) -> None:
        self.returned_at = time.perf_counter()
        if value is STOPPED:
            self.cancelled = True
            return
        self.result = value
        if self._on_result is not None and not self.cancelled:
            try:
                self._on_result(value)
            except Exception as exc:
                self._report(exc)

    def _errored(self, exc: BaseException) -> None:
        self._report(exc)

    def _report(self, exc: BaseException) -> None:
        self.error = exc
        notify_error(exc, self.what)
        if self._on_error is not None:
            self._on_error(exc)

    def _aborted(self) -> None:
        self.cancelled = True
        self._aborted_by_napari = True

    def _finished(self) -> None:
        if self._aborted_by_napari:
            # worker.quit() left the generator suspended at a yield: run its cleanup now
            try:
                self._gen.close()
            except Exception as exc:
                self._report(exc)
        self._gen = None
        self.done = True
        self._release_gc()
        if self.pbar is not None:
            self.pbar.close()
            self.pbar = None
        if self._on_done is not None:
            self._on_done(self)


def start_job(func: Callable[..., Generator], *args: Any, **kwargs: Any) -> Job:
    """Create a :class:`Job` for ``func(*args)`` and start it; see :class:`Job` for options."""
    return Job(func, *args, **kwargs).start()
