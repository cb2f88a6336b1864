"""Typed progress events yielded by the engine's generators.

Every long-running engine function has a generator twin (``iter_predict``, ``iter_train``) that
yields these events and *returns* its result (``StopIteration.value``); the plain function drains
the generator. Scripts, the command line and the GUI worker thread therefore share one code path,
and a consumer can stop the work at any ``yield`` by closing the generator.
"""

from __future__ import annotations

from collections.abc import Generator
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


@dataclass(frozen=True)
class TileSizeReduced:
    """The device ran out of memory; prediction goes on with a smaller tile (pixels per side)."""

    old: int
    new: int
    reason: str = "out of memory"


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
    | TileSizeReduced
    | StepDone
    | ValidationDone
    | AugmentationSample
    | CheckpointSaved
    | ModelSnapshot
)


def run_to_end(gen: Generator[Any, Any, T]) -> T:
    """Drain an engine generator, ignoring its events, and return its result."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
