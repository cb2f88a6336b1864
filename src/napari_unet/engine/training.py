"""Training and fine-tuning: ``iter_train()`` yields typed events, ``train()`` drains it.

The loop follows the paper: one (or a few) large tiles per step, elastic deformation and the
weighted cross-entropy of equation 1 with the weight map of equation 2. Unannotated pixels carry
weight 0 and so teach nothing, which is how sparse annotations (a few painted cells, optionally
inside user-drawn regions) are trained on.

Cancelling: the generator only stops at a ``yield``, and it yields after every completed step.
Closing it (``gen.close()``, or a GUI worker's quit) or interrupting it (Ctrl-C) writes the
checkpoint of the last completed step when a ``checkpoint_path`` was given; the ``finally`` block
then moves the model back to the CPU and releases device memory. A step that fails or diverges
(a loss that is not finite) writes nothing, so the file keeps the last good model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_unet.engine.device import autocast_dtype, release_memory, resolve_device
from napari_unet.engine.events import (
    AugmentationSample,
    CheckpointSaved,
    ModelSnapshot,
    StepDone,
    ValidationDone,
    drive,
)
from napari_unet.engine.normalization import DEFAULT_NORMALIZATION

# TrainConfig lives in a module without torch, so that the panels and the command line can read
# its defaults without importing torch; it is re-exported here.
from napari_unet.engine.train_config import (  # noqa: F401
    DEFAULT_LR,
    FINE_TUNE_FOREGROUND_FRACTION,
    OPTIMIZERS,
    SCHEDULES,
    TrainConfig,
)
from napari_unet.engine.training_samples import as_lists, hold_out, prepare_sample
from napari_unet.engine.training_tiles import (
    TileSource,
    sampling_probabilities,
    training_tile_sizes,
)


@dataclass
class TrainResult:
    """What :func:`iter_train` returns: the trained model (on the CPU), the per-step history
    (``{"step", "loss", "lr", "seconds"}`` dicts, plus ``{"step", "validation": {...}}``), the
    checkpoint written last (or ``None``) and the number of completed steps."""

    model: torch.nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoint_path: Path | None = None
    steps_done: int = 0


def iter_train(
    model: torch.nn.Module,
    images: np.ndarray | Sequence[np.ndarray],
    labels: np.ndarray | Sequence[np.ndarray],
    *,
    regions: np.ndarray | Sequence[np.ndarray | None] | None = None,
    channel_axis: int | None = None,
    config: TrainConfig | None = None,
    device: str | torch.device | None = "auto",
    normalization: dict[str, float] | None = None,
    validation: tuple[Sequence[np.ndarray], Sequence[np.ndarray]] | None = None,
    extra: dict[str, Any] | None = None,
    image_weights: Sequence[float] | None = None,
    diameter: float | None = None,
) -> Generator[Any, None, TrainResult]:
    """Train ``model`` in place on painted cells, yielding progress events.

    Parameters
    ----------
    model : a :class:`~napari_unet.engine.model.UNet`; trained in place, returned on the CPU.
    images : one array or a sequence of arrays, each (Y, X), or with channels at
        ``channel_axis`` (uint8/uint16/float; normalised here with ``normalization``).
    labels : matching integer instance labels (Y, X); 0 means "not painted". A bool mask's
        cells are its connected regions (:func:`~napari_unet.engine.layout.mask_cells`).
    regions : ``None`` (each image is annotated everywhere: unpainted pixels are background), or
        matching bool arrays (or ``None`` entries): inside a region unpainted pixels are
        background, outside they are ignored. Painted cells always count.
    channel_axis : the channel axis of each image, or ``None`` for grayscale.
    config : a :class:`TrainConfig`; defaults apply when ``None``.
    device : ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"`` or a ``torch.device``.
    normalization : the percentile normalisation (``{"low": .., "high": ..}``) of the model's
        checkpoint; default 1 and 99.8 percentiles.
    validation : optional ``(images, labels)`` held out for validation; when given, nothing of
        the training data is held out.
    extra : JSON-serialisable metadata stored in every checkpoint.
    image_weights : one non-negative number per training image: each step draws an image with
        probability proportional to its weight times its annotated area (default 1 each), so a
        corpus of several sets can be mixed in chosen shares.
    diameter : the median cell diameter (pixels) of the training data, stored in every
        checkpoint (:func:`~napari_unet.engine.diameter.match_training_diameter`).

    Yields
    ------
    StepDone, ValidationDone, AugmentationSample, ModelSnapshot, CheckpointSaved

    Returns
    -------
    TrainResult

    Raises
    ------
    ValueError
        Before any work, for bad input (no painted cells, shapes that differ, channels that do
        not fit the model, ``image_weights`` that draw only images with weight 0).
    """
    from napari_unet.engine.augment import Augmenter
    from napari_unet.engine.checkpoint_write import save_checkpoint
    from napari_unet.engine.losses import weighted_cross_entropy

    config = config or TrainConfig()
    in_channels = int(model.config.in_channels)
    n_classes = int(model.config.n_classes)
    normalization = dict(normalization or DEFAULT_NORMALIZATION)
    image_list, label_list, region_list = as_lists(images, labels, regions)
    samples = [
        prepare_sample(img, lab, reg, channel_axis, in_channels, n_classes, normalization, config)
        for img, lab, reg in zip(image_list, label_list, region_list, strict=True)
    ]
    if image_weights is not None:
        image_weights = [float(w) for w in image_weights]
        if len(image_weights) != len(samples) or min(image_weights) < 0 or not any(image_weights):
            raise ValueError(
                f"image_weights needs one non-negative number per image ({len(samples)}), "
                "not all zero"
            )
        for sample, weight in zip(samples, image_weights, strict=True):
            sample.share = weight
        if not any(s.share > 0 and s.weights.any() for s in samples):
            raise ValueError(
                "image_weights draw only images without an annotated pixel (no painted cell, "
                "no region): every pixel of their tiles has weight 0 and teaches nothing"
            )
    if not any(s.weights.any() and (s.labels > 0).any() for s in samples):
        raise ValueError(
            "no painted cells: paint at least one cell in the labels layer before training"
        )
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    if validation is not None:
        val_images, val_labels, _ = as_lists(validation[0], validation[1], None)
        val_samples = [
            prepare_sample(img, lab, None, channel_axis, in_channels, n_classes, normalization, config)
            for img, lab in zip(val_images, val_labels, strict=True)
        ]
        val_masks = [np.ones(s.labels.shape, bool) for s in val_samples]
    else:
        samples, val_samples, val_masks = hold_out(samples, config, rng)

    dev = resolve_device(device)
    largest = max(max(s.labels.shape) for s in samples)
    tile_in, tile_out = training_tile_sizes(model, largest, config.tile_size, dev)
    augmenter = Augmenter(
        elastic_sigma=config.elastic_sigma,
        scale=config.zoom_range,
        strength=config.augment_strength,
        rng=rng,
    )
    model.to(dev)
    optimizer = _make_optimizer(model, config)
    amp_dtype = autocast_dtype(dev, config.amp)
    use_amp = amp_dtype is not None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    sampling_p = sampling_probabilities(samples)
    tiles = TileSource(samples, sampling_p, tile_in, augmenter, n_classes, rng, config)
    freeze_norm = _keeps_norm_statistics(model, config)
    checkpoint_path = Path(config.checkpoint_path) if config.checkpoint_path else None
    saved_path: Path | None = None
    saved_step = 0
    history: list[dict[str, Any]] = []
    step = 0
    train_meta = {**config.to_dict(), "tile_input": tile_in, "tile_output": tile_out}

    def write_checkpoint(done: int) -> CheckpointSaved:
        nonlocal saved_path, saved_step
        saved_path = save_checkpoint(
            checkpoint_path,
            model,
            normalization=normalization,
            training={**train_meta, "steps_done": done},
            history=history,
            extra=extra,
            diameter=diameter,
        )
        saved_step = done
        return CheckpointSaved(step=done, path=str(saved_path))

    # the completed step the model's weights hold; -1 while an update is not yet checked
    model_step = 0
    try:
        t_start = time.perf_counter()
        for step in range(1, config.steps + 1):
            t0 = time.perf_counter()
            lr = _learning_rate(config, _progress(config, step, t0 - t_start))
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = tiles.batch(step)
            x = torch.from_numpy(np.stack([b[0] for b in batch])).to(dev)
            target = torch.from_numpy(np.stack([b[2] for b in batch])).to(dev)
            weights = torch.from_numpy(np.stack([b[3] for b in batch])).to(dev)
            model.train()
            if freeze_norm:
                _freeze_batch_norm(model)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(dev.type, dtype=amp_dtype, enabled=use_amp):
                logits = model(x)
            loss = weighted_cross_entropy(logits.float(), target, weights)
            scaler.scale(loss).backward()
            model_step = -1
            scaler.step(optimizer)
            scaler.update()
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                raise FloatingPointError(
                    f"the loss became {loss_value} at step {step}; lower the learning rate"
                )
            model_step = step
            seconds = time.perf_counter() - t0
            history.append({"step": step, "loss": loss_value, "lr": lr, "seconds": seconds})
            yield StepDone(step=step, total=config.steps, loss=loss_value, lr=lr, seconds=seconds)

            if config.sample_every and (step == 1 or step % config.sample_every == 0):
                image, labels_t, target_t, weights_t = batch[0]
                yield AugmentationSample(
                    step=step,
                    image=image[0] if image.shape[0] == 1 else image,
                    labels=labels_t,
                    weights=weights_t,
                    target=target_t,
                )
            last = step == config.steps or (
                config.time_limit is not None and time.perf_counter() - t_start >= config.time_limit
            )
            if val_samples and (step % config.val_every == 0 or last):
                metrics = _validate(model, val_samples, val_masks, dev, tile_out, config.amp)
                history.append({"step": step, "validation": metrics})
                yield ValidationDone(step=step, metrics=metrics)
            if config.snapshot_every and (step % config.snapshot_every == 0 or last):
                yield ModelSnapshot(step=step, state_dict=_cpu_state_dict(model))
            if checkpoint_path is not None and (step % config.checkpoint_every == 0 or last):
                yield write_checkpoint(step)
            if last:
                break
    except (GeneratorExit, KeyboardInterrupt):
        # cancelled (at a yield, after a completed step) or interrupted: keep the last completed
        # step. Any other exception writes nothing: the file keeps the last good model.
        if checkpoint_path is not None and model_step > saved_step:
            write_checkpoint(model_step)
        raise
    finally:
        tiles.close()
        optimizer.zero_grad(set_to_none=True)
        del optimizer
        model.to("cpu")
        model.eval()
        release_memory(dev)
    return TrainResult(
        model=model, history=history, checkpoint_path=saved_path, steps_done=step
    )


def train(*args: Any, **kwargs: Any) -> TrainResult:
    """:func:`iter_train` without the events: train and return the :class:`TrainResult`."""
    return drive(iter_train(*args, **kwargs))


# -- optimisation --------------------------------------------------------------------------


def _make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.learning_rate,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    return torch.optim.Adam(params, lr=config.learning_rate, weight_decay=config.weight_decay)


def _progress(config: TrainConfig, step: int, elapsed: float) -> float:
    """How far the run is, from 0 at the first step to 1 at the last step or the time limit."""
    progress = (step - 1) / max(config.steps - 1, 1)
    if config.time_limit is not None:
        progress = max(progress, elapsed / config.time_limit)
    return min(progress, 1.0)


def _learning_rate(config: TrainConfig, progress: float) -> float:
    base = config.learning_rate
    if config.schedule == "constant":
        return base
    floor = 0.05 * base
    return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * progress))


def _keeps_norm_statistics(model: torch.nn.Module, config: TrainConfig) -> bool:
    """Whether batch-norm statistics stay as they are: with one tile per step (the fine-tune
    default) on a model that has them already, one tile's statistics would drag the running
    averages away from what the model learned on its whole corpus."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    trained = any(int(m.num_batches_tracked) > 0 for m in norms if m.num_batches_tracked is not None)
    return bool(norms) and trained and config.batch_size == 1


def _freeze_batch_norm(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


# -- validation and snapshots ---------------------------------------------------------------


def _validate(model, val_samples, val_masks, device, tile_out, amp) -> dict[str, float]:
    """Weighted loss and instance metrics of the held-out data, each scored inside its mask."""
    from napari_unet.engine.instances import instances_from_probabilities
    from napari_unet.engine.metrics import evaluate
    from napari_unet.engine.tiling import predict

    losses, weight_sums = 0.0, 0.0
    preds, gts, masks = [], [], []
    for s, mask in zip(val_samples, val_masks, strict=True):
        rows, cols = np.nonzero(mask)
        if rows.size == 0:
            continue
        margin = 8
        r0, r1 = max(rows.min() - margin, 0), min(rows.max() + margin + 1, mask.shape[0])
        c0, c1 = max(cols.min() - margin, 0), min(cols.max() + margin + 1, mask.shape[1])
        image = s.image[:, r0:r1, c0:c1]
        prob = predict(
            model,
            image,
            channel_axis=0,
            device=device,
            amp=amp,
            tile_size=tile_out,
            normalization=False,
        )
        m = mask[r0:r1, c0:c1]
        w = np.where(m, s.weights[r0:r1, c0:c1], 0.0)
        target = s.target[r0:r1, c0:c1]
        p_true = np.take_along_axis(prob, target[np.newaxis], axis=0)[0]
        losses += float(-(w * np.log(np.clip(p_true, 1e-7, 1.0))).sum())
        weight_sums += float(w.sum())
        preds.append(instances_from_probabilities(prob))
        gts.append(s.labels[r0:r1, c0:c1])
        masks.append(m)
    metrics: dict[str, float] = {"loss": losses / max(weight_sums, 1e-12)}
    if preds:
        scores = [evaluate(p, g, mask=m) for p, g, m in zip(preds, gts, masks, strict=True)]
        for key in ("f1@0.5", "ap@0.5", "iou"):
            values = [sc[key] for sc in scores if key in sc]
            if values:
                metrics[key] = float(np.mean(values))
    return metrics


def _cpu_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
