"""Typed progress events yielded by the engine's generators.

Every long-running engine function has a generator twin (``iter_predict``, ``iter_train``) that
yields these events and *returns* its result (``StopIteration.value``); :func:`drive` runs such a
generator to the end (calling a handler per event) and :func:`relay` passes its events on from
another generator. Scripts, the command line and the GUI worker thread therefore share one code
path, and a consumer can stop the work at any ``yield`` by closing the generator. Consumers
dispatch on the event classes (``isinstance`` or ``match``), never on their names.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class TileDone:
    """One batch of tiles of one plane was predicted.

    ``done``/``total`` count tiles over the whole job (all planes), so ``done / total`` is the
    overall fraction.
    """

    done: int
    total: int
    plane: int = 0
    n_planes: int = 1


@dataclass(frozen=True)
class PlaneDone:
    """One plane (Z slice or time point) of a stack is finished."""

    plane: int
    n_planes: int


@dataclass(frozen=True, eq=False)
class PlaneSegmented:
    """Plane ``plane`` of ``n_planes`` has its final instance labels.

    ``labels`` is (Y, X) int32 at the input's scale; its ids follow those of the planes before
    it, as in the final result. A consumer that stops the job keeps the planes done (see
    :class:`~napari_unet.engine.partial.PartialLabels`).
    """

    plane: int
    n_planes: int
    labels: np.ndarray


@dataclass(frozen=True)
class TileSizeReduced:
    """The device ran out of memory; prediction goes on with a smaller tile (pixels per side)."""

    old: int
    new: int
    reason: str = "out of memory"


@dataclass(frozen=True)
class BlockDone:
    """One block of a block-wise segmentation is labelled (``done`` of ``total`` blocks, over
    all planes)."""

    done: int
    total: int


@dataclass(frozen=True)
class Note:
    """Something the user should know about how the work is done (e.g. the input was
    re-chunked); one sentence."""

    message: str


@dataclass(frozen=True)
class StepDone:
    """One optimisation step finished. ``loss`` is the weighted cross-entropy of that step."""

    step: int
    total: int
    loss: float
    lr: float
    seconds: float


@dataclass(frozen=True)
class ValidationDone:
    """Validation ran after ``step``; ``metrics`` maps metric name to value (e.g. ``"loss"``,
    ``"f1@0.5"``, ``"iou"``)."""

    step: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class AugmentationSample:
    """The augmented tile the network just trained on, for display.

    ``image`` is (Y, X) or (C, Y, X) float32 as fed to the network (normalised); ``labels`` the
    deformed instance labels (Y, X) int32; ``weights`` the pixel weights (Y, X) float32 (0 where
    ignored); ``target`` the class target (Y, X) int64 (0 background, 1 cell, 2 border). All share
    the input tile's spatial shape.
    """

    step: int
    image: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    target: np.ndarray


@dataclass(frozen=True)
class CheckpointSaved:
    """A checkpoint was written atomically to ``path`` after ``step``."""

    step: int
    path: str


@dataclass(frozen=True, eq=False)
class ModelSnapshot:
    """A consistent CPU copy of the weights after ``step``, taken inside the training thread.

    Lets a consumer (the GUI's live preview, a cancelled job) use the newest good weights while
    training goes on, without reading a model that another thread is updating.
    """

    step: int
    state_dict: dict


Event = (
    TileDone
    | PlaneDone
    | PlaneSegmented
    | TileSizeReduced
    | BlockDone
    | Note
    | StepDone
    | ValidationDone
    | AugmentationSample
    | CheckpointSaved
    | ModelSnapshot
)


def drive(gen: Generator[Any, Any, T], on_event: Callable[[Any], None] | None = None) -> T:
    """Run an engine generator to the end and return its result.

    The one loop that consumes an engine generator: the command line, the widgets' preview and
    ``predict()``/``train()``/``segment()`` all go through it. ``gen`` is closed in ``finally``,
    so its cleanup (a last checkpoint, the model back on the CPU, freed device memory) runs also
    when ``on_event`` raises or the caller is interrupted (``KeyboardInterrupt``).

    Parameters
    ----------
    gen : generator
        Yields events (:data:`Event`), returns the result (``StopIteration.value``).
    on_event : callable, optional
        Called with every event, in order; dispatch on the event classes
        (``isinstance``/``match``).

    Returns
    -------
    The generator's return value.

    Examples
    --------
    >>> def job():
    ...     yield StepDone(step=1, total=1, loss=0.5, lr=1e-3, seconds=0.1)
    ...     return "model"
    >>> drive(job(), on_event=lambda e: print(type(e).__name__, e.step))
    StepDone 1
    'model'
    """
    try:
        while True:
            try:
                event = next(gen)
            except StopIteration as stop:
                return stop.value
            if on_event is not None:
                on_event(event)
    finally:
        gen.close()


#: What :func:`relay` returns when its ``stop`` condition ended the work early.
STOPPED = object()


def relay(
    gen: Generator[Any, Any, T],
    on_event: Callable[[Any], Any] | None = None,
    *,
    stop: Callable[[], bool] | None = None,
) -> Generator[Any, None, T]:
    """Forward the events of an engine generator, optionally changed, and return its result.

    :func:`drive`'s twin for code that is itself a generator (a job that re-counts or adds to
    the events it passes on): use it with ``yield from``. ``gen`` is closed in ``finally``.

    Parameters
    ----------
    gen : generator
        The engine generator.
    on_event : callable, optional
        Maps each event to the event to pass on; ``None`` from it drops the event.
    stop : callable, optional
        Asked before every step of ``gen``; when it returns true, ``gen`` is closed and
        :data:`STOPPED` is returned.
    """
    try:
        while True:
            if stop is not None and stop():
                return STOPPED  # type: ignore[return-value]
            try:
                event = next(gen)
            except StopIteration as done:
                return done.value
            if on_event is not None:
                event = on_event(event)
            if event is not None:
                yield event
    finally:
        gen.close()


#: The name of :func:`drive` before it took callbacks; kept for callers written against it.
run_to_end = drive
