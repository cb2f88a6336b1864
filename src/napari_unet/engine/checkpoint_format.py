"""What a napari-unet model file is: its format name and version, :class:`Checkpoint` (everything
in the file but the weights) and :class:`CheckpointError`, the one error every problem with a
model file raises; no torch. The layout of the file is described in
:mod:`~napari_unet.engine.checkpoint`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from napari_unet.engine.model import UNetConfig

__all__ = ["CHECKPOINT_FORMAT", "FORMAT_VERSION", "Checkpoint", "CheckpointError", "first_line"]

CHECKPOINT_FORMAT = "napari-unet"
#: The newest format this version writes and reads.
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A model file is missing, unreadable, unsafe, foreign or does not fit the data."""


@dataclass(frozen=True)
class Checkpoint:
    """Everything in a model file except the weights.

    Attributes
    ----------
    config : UNetConfig
        The architecture; ``UNet(config)`` rebuilds the network.
    normalization : dict
        How images were normalised for training (e.g. the percentiles of ``tiling.normalize``).
    training : dict
        Training parameters (e.g. ``TrainConfig`` as a dict, the cell diameter).
    history : list of dict
        One record per logged step or validation (loss, metrics, ...).
    diameter : float or None
        The median cell diameter (pixels) of the training data, which prediction rescales
        images to (:mod:`~napari_unet.engine.diameter`); ``None`` when unknown.
    extra : dict
        Anything else (a name, a description, the data it was trained on, ...).
    format_version : int
        The file's format version.
    path : Path or None
        The file it was read from.
    napari_unet_version, saved_at : str
        The napari-unet version that wrote the file and when (ISO 8601, UTC).
    """

    config: UNetConfig
    normalization: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    diameter: float | None = None
    format_version: int = FORMAT_VERSION
    path: Path | None = None
    napari_unet_version: str = ""
    saved_at: str = ""

    @property
    def in_channels(self) -> int:
        """Image channels the model reads."""
        return int(self.config.in_channels)

    @property
    def n_classes(self) -> int:
        """Classes the model predicts."""
        return int(self.config.n_classes)


def first_line(err: BaseException) -> str:
    """The first sentence of an exception's message (at most 160 characters), for use inside one
    of the sentences of a :class:`CheckpointError`."""
    lines = str(err).strip().splitlines()
    text = lines[0].split(". ")[0].rstrip(".") if lines else ""
    return text[:160] or type(err).__name__
