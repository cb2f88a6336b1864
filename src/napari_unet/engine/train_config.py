"""How a model is trained: :class:`TrainConfig` and its presets, without torch.

The Fine-tune panel and ``napari-unet train`` take their defaults from here, so that a default
(w0 = 10, the learning rate of each optimiser, ...) is written once;
:func:`~napari_unet.engine.training.iter_train` trains with it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine")
DEFAULT_LR = {"adam": 1e-3, "sgd": 1e-2}
#: The largest learning rate accepted: 100x SGD's preset. Far above it a step overshoots so much
#: that the loss turns NaN within a few steps (lr=1e10: at step 2, after all data were read).
MAX_LR = 1.0

#: Share of tiles centred on a labelled cell for fine-tuning on sparse annotations, used by the
#: Fine-tune panel and ``napari-unet train``: a few painted cells in a large image are otherwise
#: seen in few steps (see benchmarks/bench_finetune.py). ``TrainConfig`` itself defaults to 0.
FINE_TUNE_FOREGROUND_FRACTION = 0.5


@dataclass
class TrainConfig:
    """Everything that decides how a model is trained; saved in the checkpoint.

    Parameters
    ----------
    steps : number of optimisation steps.
    optimizer : ``"adam"`` (fast fine-tuning) or ``"sgd"`` (the paper's preset: momentum 0.99,
        one large tile per step).
    lr : learning rate, above 0 and at most :data:`MAX_LR`; ``None`` takes the preset's (Adam
        1e-3, SGD 1e-2).
    momentum : SGD momentum (the paper: 0.99).
    weight_decay : L2 penalty.
    schedule : ``"constant"`` or ``"cosine"`` decay of the learning rate to 5% over ``steps`` (or
        over ``time_limit``, whichever comes first).
    time_limit : seconds of training; the run stops after the step that reaches it (validating
        and saving as after the last step), and a cosine schedule follows the time spent. ``None``
        for no limit: ``steps`` steps are run.
    tile_size : side of the network's *output* tile in pixels; ``None`` chooses from the images
        and the device.
    batch_size : tiles per step.
    w0, sigma : the border weight of equation 2 (unitless) and its width (pixels).
    class_balance : weigh the classes inversely to their frequency (the ``w_c`` of equation 2).
        The rare border class then weighs several times more than the background, and the
        network learns to draw it generously: masks about 1-2 px too large at 20-px nuclei
        (docs/benchmarks/accuracy.md). ``False`` keeps ``w_c = 1`` and only the border term.
    augment_strength : scales every augmentation; 0 turns augmentation off.
    elastic_sigma : standard deviation of the elastic grid displacements in pixels (paper: 10).
    zoom_range : tiles are zoomed by a factor drawn log-uniformly in [1 / (1 + a), 1 + a]; a
        generalist model is trained with 0.5 so that it holds over 0.67-1.5x of its cell size.
    foreground_fraction : share of the tiles centred on a labelled cell pixel; the others are
        centred on any annotated pixel. Raise it (e.g. 0.5) when cells cover a small part of
        densely annotated images, or most steps see background only; 0 keeps the plain rule.
    val_fraction : share of the annotated cells (one image: cells; several: whole images) held
        out for validation; 0 for none.
    val_every : validate every this many steps (and after the last).
    sample_every : yield an :class:`AugmentationSample` every this many steps; 0 for never.
    snapshot_every : yield a :class:`ModelSnapshot` every this many steps; 0 for never.
    checkpoint_path : where to write checkpoints; ``None`` for none.
    checkpoint_every : write a checkpoint every this many steps (and at the end or on cancel).
    seed : seeds the tile sampling, the augmentation and torch.
    amp : mixed precision: on CUDA bfloat16 where supported, else float16 with loss scaling; on
        a CPU with bfloat16 in hardware (AVX512-BF16, AMX) bfloat16; float32 elsewhere.
    workers : processes that cut and augment tiles ahead of the network (0: in this thread).
        With workers every tile has its own seed (seed, step, tile), so a run is reproducible for
        any number of workers, though not identical to a run with 0. Worth it when the network
        waits for the data: on a GPU, or with several CPU cores to spare.
    """

    steps: int = 200
    optimizer: str = "adam"
    lr: float | None = None
    momentum: float = 0.99
    weight_decay: float = 0.0
    schedule: str = "constant"
    tile_size: int | None = None
    batch_size: int = 1
    w0: float = 10.0
    sigma: float = 5.0
    class_balance: bool = True
    augment_strength: float = 1.0
    elastic_sigma: float = 10.0
    zoom_range: float = 0.1
    foreground_fraction: float = 0.0
    val_fraction: float = 0.15
    val_every: int = 25
    sample_every: int = 10
    snapshot_every: int = 0
    checkpoint_path: str | None = None
    checkpoint_every: int = 50
    seed: int = 0
    amp: bool = True
    workers: int = 0
    time_limit: float | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, not {self.schedule!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, not {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {self.batch_size}")
        if self.lr is not None and not 0 < self.lr <= MAX_LR:  # NaN fails too
            raise ValueError(
                f"the learning rate must be above 0 and at most {MAX_LR:g}, not {self.lr:g}"
            )
        if not (0 <= self.w0 < math.inf and 0 < self.sigma < math.inf):  # NaN fails too
            raise ValueError(f"need w0 >= 0 and sigma > 0, got w0={self.w0}, sigma={self.sigma}")
        if not 0 <= self.augment_strength < math.inf:
            raise ValueError(f"augment_strength must be a number >= 0, not {self.augment_strength}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be a whole number from 0 to 2**63 - 1, not {self.seed}")
        if not 0 <= self.foreground_fraction <= 1:
            raise ValueError(
                f"foreground_fraction must be between 0 and 1, not {self.foreground_fraction}"
            )
        if not 0 <= self.zoom_range <= 4:
            raise ValueError(f"zoom_range must be in [0, 4], not {self.zoom_range}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, not {self.workers}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise ValueError(f"time_limit must be a positive number of seconds, not {self.time_limit}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), not {self.val_fraction}")
        if self.checkpoint_path is not None:
            self.checkpoint_path = str(self.checkpoint_path)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown training options: {', '.join(sorted(unknown))}")
        return cls(**data)
