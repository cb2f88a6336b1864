"""The Fine-tune panel's work, run in a worker thread: fine-tune a copy of a model on painted
cells, keep the model a run leaves, and segment previews with a snapshot of it.

Nothing here touches Qt or a layer: the job yields events (the engine's, and
:class:`WeightMapReady`) and fills in a :class:`RunState` that the panel reads once the job is
over.
"""

from __future__ import annotations

import copy
import logging
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_unet._qt._finetune_checks import annotation_warnings, painted_score, refuse_non_finite
from napari_unet._qt._session import ModelEntry
from napari_unet._qt._worker import shield_runtime_error
from napari_unet.engine.confidence_calibration import chosen_min_confidence
from napari_unet.engine.events import (
    ModelSnapshot,
    StepDone,
    ValidationDone,
    drive,
    relay,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class WeightMapReady:
    """Event of the fine-tune job: the :class:`~napari_unet.engine.weights.WeightMap` of the
    annotations, float32 (Y, X) parts at the labels' own scale, and the
    :func:`~napari_unet._qt._finetune_checks.annotation_warnings` of the painted cells."""

    weight_map: Any
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ScoreBefore:
    """Event of the fine-tune job: how the start model finds the painted cells
    (a :class:`~napari_unet._qt._finetune_checks.PaintedScore`), before training, and the cell
    diameter (image pixels) that segmentation used (given or estimated; ``None`` for a model
    without a training diameter)."""

    score: Any
    diameter: float | None = None


@dataclass(frozen=True)
class ChoosingConfidence:
    """Event of the fine-tune job, after the last step: the trained model segments the painted
    plane to choose its minimum confidence (a full segmentation: long on a large image). Stop
    here keeps the model without the choice."""


@dataclass(frozen=True)
class ConfidenceChosen:
    """Event of the fine-tune job, after the last step: the minimum confidence chosen for the
    fine-tuned model on the painted cells (a
    :class:`~napari_unet.engine.confidence_calibration.ConfidenceCalibration`), stored in its
    metadata."""

    calibration: Any


@dataclass(eq=False)
class FineTuneRequest:
    """Everything one fine-tuning run needs, gathered on the GUI thread.

    Attributes
    ----------
    entry : the model to start from (the session's current model).
    image : the image plane, (Y, X) or (Y, X, C); may be lazy, it is read in the worker.
    channel_axis : ``-1`` for an RGB(A) image, ``None`` for grayscale.
    labels : (Y, X) integer copy of the painted cells (0 = not painted).
    regions : (Y, X) bool, True inside the annotated regions, or ``None`` (all annotated).
    config : the :class:`~napari_unet.engine.training.TrainConfig` to train with.
    device : ``"auto"``, ``"cuda"``, ``"mps"`` or ``"cpu"``.
    diameter : the cells' diameter in image pixels, or ``None`` to measure the painted cells.
    labels_name : the Labels layer's name (recorded in the model's metadata).
    image_name : the image layer's name (the sentence about NaN or infinite values names it).
    segment_options : the Segment panel's options (``Session.segment_options``): the score
        before training segments with them, as the previews do.
    warnings : sentences about the layers that the panel shows when the run starts.

    The time budget is ``config.time_limit``: the engine stops after the step that reaches it.
    """

    entry: ModelEntry
    image: Any
    channel_axis: int | None
    labels: np.ndarray
    regions: np.ndarray | None
    config: Any
    device: str
    diameter: float | None
    labels_name: str = ""
    image_name: str = ""
    segment_options: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


@dataclass(eq=False)
class RunState:
    """What the training worker shares with the GUI thread for one run.

    The worker fills it in; the GUI thread reads it in the job's ``on_done`` (after the worker
    has finished) and, for the preview, reads ``net_config``/``normalization``/``extra``, which
    are set before the first event is yielded.

    Attributes
    ----------
    base_label : the label of the model training started from.
    base_kind : its :class:`~napari_unet._qt._session.ModelEntry` kind (``"fine-tuned"``: this
        run goes on from an earlier one, and the kept model's label says both).
    net_config : the network's ``UNetConfig``.
    normalization, extra : the checkpoint metadata the fine-tuned model gets.
    scale : how the plane was brought to the model's diameter
        (:class:`~napari_unet.engine.diameter.TrainingScale`); its ``input_diameter`` is what
        previews segment this image with, so that it is rescaled exactly as for training.
    steps_done : the last completed step.
    history : ``{"step", "loss", "lr", "seconds"}`` and ``{"step", "validation"}`` records.
    snapshot : the newest ``ModelSnapshot`` (CPU weights).
    final : ``(UNet, Checkpoint)`` on the CPU once the run is over and left a model, else ``None``.
    final_step : the step ``final`` holds.
    failed : whether the run ended with an error (``final`` then comes from ``snapshot``).
    time_up : whether the run ended because its time budget was spent.
    score_before : how the start model found the painted cells (a ``PaintedScore``).
    """

    base_label: str
    base_kind: str = "default"
    net_config: Any = None
    normalization: dict | None = None
    extra: dict = field(default_factory=dict)
    scale: Any = None
    steps_done: int = 0
    history: list[dict] = field(default_factory=list)
    snapshot: Any = None
    final: tuple | None = None
    final_step: int = 0
    failed: bool = False
    config: Any = None
    time_up: bool = False
    score_before: Any = None


def _checkpoint_for(run: RunState, step: int) -> Any:
    """The metadata of the model of ``step``."""
    from napari_unet.engine.checkpoint import Checkpoint

    training = {**run.config.to_dict(), "steps_done": step, "fine_tuned_from": run.base_label}
    history = [h for h in run.history if h["step"] <= step]
    return Checkpoint(
        config=run.net_config,
        normalization=dict(run.normalization or {}),
        training=training,
        history=history,
        extra=dict(run.extra),
        diameter=run.scale.diameter,
    )


def finetune_job(request: FineTuneRequest, run: RunState):
    """Worker-thread generator: fine-tune a copy of the request's model on its painted cells.

    Yields :class:`WeightMapReady` first, then the engine's training events. Whatever happens
    (end, Stop, error) the run leaves the kept model in ``run.final`` (CPU): the trained network
    after the end or a Stop (the last completed step), or the last snapshot after an error.
    Returns the engine's ``TrainResult``; a ``RuntimeError`` (e.g. out of memory) comes out as a
    :class:`JobRuntimeError`.
    """
    try:
        return (yield from _finetune(request, run))
    except RuntimeError as exc:
        raise shield_runtime_error(exc) from exc


def _finetune(request: FineTuneRequest, run: RunState):
    """The body of :func:`finetune_job`."""
    from napari_unet._qt._segment_call import load_entry
    from napari_unet.engine.diameter import match_training_diameter
    from napari_unet.engine.layout import gray_for_model
    from napari_unet.engine.models import require_unet
    from napari_unet.engine.training import iter_train
    from napari_unet.engine.weights import training_targets

    # first: a lazy plane is read here, not on the GUI thread, and one with NaN is refused
    # before anything is shown, as Start refuses one in memory; later uses take what was read
    request.image = refuse_non_finite(request.image, request.image_name)
    base, checkpoint = load_entry(request.entry)  # on the CPU; ModelUnusable names the file
    require_unet(base, checkpoint)
    net = copy.deepcopy(base)  # never train the session's model object in place
    del base
    labels = np.asarray(request.labels)
    regions = request.regions
    config = request.config
    run.config = config
    run.net_config = net.config
    run.normalization = dict(checkpoint.normalization) if checkpoint.normalization else None

    _, _, shown = training_targets(
        labels, regions, w0=config.w0, sigma=config.sigma, n_classes=int(net.config.n_classes)
    )
    yield WeightMapReady(shown, tuple(annotation_warnings(labels, regions)))

    plane, channel_axis = gray_for_model(
        np.asarray(request.image),
        channel_axis=request.channel_axis,
        in_channels=int(net.config.in_channels),
    )
    (image,), (labels,), (regions,), scale = match_training_diameter(
        [plane],
        [labels],
        [regions],
        model_diameter=checkpoint.diameter,
        diameter=request.diameter,
    )
    run.scale = scale
    run.extra = {
        **checkpoint.extra,
        "fine_tuned_from": request.entry.label,
        "fine_tuned_on": request.labels_name,
    }
    # the whole plane, not the painted cells' box: without regions the score's area is the
    # whole plane (an object anywhere is an extra one, as training teaches), and percentiles,
    # the diameter measured here (the previews reuse it) and the rescaling are the plane's
    before = _segment_plane(
        plane, channel_axis, (net, checkpoint), device=request.device, **request.segment_options
    )
    run.score_before = painted_score(before.labels, request.labels, request.regions)
    yield ScoreBefore(run.score_before, before.diameter)

    def record(event: Any) -> Any:
        match event:
            case StepDone():
                run.steps_done = event.step
                run.history.append(
                    {
                        "step": event.step,
                        "loss": event.loss,
                        "lr": event.lr,
                        "seconds": event.seconds,
                    }
                )
            case ValidationDone():
                run.history.append({"step": event.step, "validation": dict(event.metrics)})
            case ModelSnapshot():
                run.snapshot = event
        return event

    gen = iter_train(
        net,
        image,
        labels,
        regions=regions,
        channel_axis=channel_axis,
        config=config,
        device=request.device,
        normalization=run.normalization,
        extra=run.extra,
        diameter=scale.diameter,
    )
    try:
        # Stop closes gen: the engine's cleanup runs (model to the CPU, memory freed) and the
        # model of the last completed step is kept; a spent time budget ends the run in the
        # engine, after the step that reached it
        result = yield from relay(gen, record)
        run.time_up = result.steps_done < config.steps
        yield ChoosingConfidence()
        calibration = _choose_min_confidence(request, run, net, plane, channel_axis)
        if calibration is not None:
            yield ConfidenceChosen(calibration)
        return None if run.time_up else result
    except GeneratorExit:
        raise
    except BaseException as exc:
        run.failed = True
        # the traceback's frames hold the step's device tensors: drop them so that keeping
        # the error (for the notification) keeps no device memory
        traceback.clear_frames(exc.__traceback__)
        raise
    finally:
        _keep_model(run, net)


def _choose_min_confidence(
    request: FineTuneRequest, run: RunState, net: Any, plane: Any, channel_axis: int | None
) -> Any:
    """Choose the trained model's minimum confidence on the painted cells (segmented as the
    previews segment this image) and record it in ``run.extra``; ``None`` when nothing was
    painted inside the regions or the choice failed (the model keeps its start value).
    Without annotated regions only the surroundings of the painted cells count
    (:func:`~napari_unet.engine.confidence_calibration.painted_region`): the unpainted cells
    elsewhere are not false objects."""
    from napari_unet.engine.confidence_calibration import (
        calibrate_min_confidence,
        painted_region,
        with_calibration,
    )

    options = {
        k: v for k, v in request.segment_options.items() if k not in ("diameter", "min_confidence")
    }
    # a tie keeps what the user segments with now (Segment's control), not the file's value
    previous = request.segment_options.get("min_confidence")
    painted = np.asarray(request.labels)
    region = request.regions
    if region is None:
        region = painted_region(painted, run.scale.data_diameter)
    try:
        calibration = calibrate_min_confidence(
            (copy.deepcopy(net).to("cpu").eval(), _checkpoint_for(run, run.steps_done)),
            [plane],
            [painted],
            [region],
            diameter=run.scale.input_diameter,
            channel_axis=channel_axis,
            device=request.device,
            previous=previous,
            **options,
        )
    except ValueError:
        return None
    except Exception:  # the trained model matters more than its filter: keep it, log why
        logger.exception("could not choose the minimum confidence")
        return None
    run.extra = with_calibration(run.extra, calibration)
    return calibration


def _keep_model(run: RunState, net: Any) -> None:
    """Put the model this run leaves into ``run.final`` (see :func:`finetune_job`)."""
    try:
        if not run.failed and run.steps_done > 0:
            net.to("cpu").eval()
            run.final, run.final_step = (net, _checkpoint_for(run, run.steps_done)), run.steps_done
        elif run.failed and run.snapshot is not None:
            kept = snapshot_model(run, run.snapshot)
            run.final, run.final_step = kept, run.snapshot.step
    except Exception:  # never hide the run's own outcome behind a packaging problem
        logger.exception("could not keep the fine-tuned model")


def snapshot_model(run: RunState, snapshot: Any) -> tuple[Any, Any]:
    """A new CPU ``(UNet, Checkpoint)`` built from a ``ModelSnapshot`` of ``run``."""
    from napari_unet.engine.models import model_from_weights

    return model_from_weights(run.net_config, snapshot.state_dict), _checkpoint_for(
        run, snapshot.step
    )


def preview_job(image: Any, channel_axis: int | None, model: Any, **options: Any) -> Any:
    """Worker thread: segment one (Y, X[, C]) plane with ``model`` (a zero-argument callable
    returning what ``load_model`` accepts) and the Segment panel's ``options`` (``device``,
    ``diameter``, ``threshold``, ...); returns the ``SegmentResult``. A shared network is
    copied first, so a preview never moves the session's model to a device."""
    return _segment_plane(image, channel_axis, model(), **options)


def scored_preview_job(
    image: Any, channel_axis: int | None, model: Any, painted: Any, regions: Any, **options: Any
) -> tuple[Any, Any]:
    """:func:`preview_job`, and how its labels find the ``painted`` cells (in ``regions``):
    returns ``(SegmentResult, PaintedScore)``."""
    result = preview_job(image, channel_axis, model, **options)
    return result, painted_score(result.labels, painted, regions)


def _segment_plane(image: Any, channel_axis: int | None, source: Any, **options: Any) -> Any:
    """Segment one plane with ``source`` (anything ``load_model`` accepts) through the same
    call as the Segment panel (:func:`~napari_unet._qt._segment_call.segment_call`); a
    network is copied first, so that it never moves to another device."""
    import torch

    from napari_unet._qt._segment_call import segment_call
    from napari_unet.engine.models import load_model

    shared = isinstance(source, (tuple, torch.nn.Module))
    net, checkpoint = load_model(source)
    model = (copy.deepcopy(net) if shared else net, checkpoint)
    return drive(segment_call(image, channel_axis, model, **options))


def kept_model(run: RunState | None, job: Any) -> tuple[ModelEntry | None, str | None]:
    """The session entry of the model a finished run kept (``None`` if none) and the sentence
    that tells the user what happened (``None``: nothing to tell); ``job`` is the ended Job."""
    if run is None or run.final is None:
        if job.cancelled:
            return None, "stopped before the first step; the model is unchanged"
        if job.error is not None:
            return None, "failed (see the notification); the model is unchanged"
        return None, None
    net, checkpoint = run.final
    this_run = f"{run.extra.get('fine_tuned_on') or 'painted cells'} (step {run.final_step})"
    entry = ModelEntry(
        # a run from a fine-tuned model: both, or two models would bear the same name
        f"{run.base_label}, then on {this_run}"
        if run.base_kind == "fine-tuned"
        else f"fine-tuned on {this_run}",
        (net, checkpoint),
        kind="fine-tuned",
        normalization=checkpoint.normalization,
        step=run.final_step,
        min_confidence=chosen_min_confidence(checkpoint),
    )
    if run.failed and not job.cancelled:
        return entry, (
            f"failed at step {run.steps_done + 1} (see the notification); kept the model of "
            f"step {run.final_step}"
        )
    what = "stopped" if job.cancelled else "time is up" if run.time_up else "done"
    return entry, f"{what} after step {run.final_step}"


def save_package_file(path: Any, entry: ModelEntry) -> Any:
    """Worker thread: write the ``(UNet, Checkpoint)`` of ``entry`` as a BioImage.IO package
    (:func:`~napari_unet.engine.bioimageio.export_package`, atomic); returns the path written."""
    from napari_unet.engine.bioimageio import export_package

    net, checkpoint = entry.source
    export_package((net, checkpoint), path)
    return path


def save_model_file(path: Any, entry: ModelEntry) -> Any:
    """Worker thread: write the ``(UNet, Checkpoint)`` of ``entry`` to ``path`` atomically, with
    all its metadata; returns the path written."""
    from napari_unet.engine.checkpoint import save_checkpoint

    net, checkpoint = entry.source
    return save_checkpoint(
        path,
        net,
        normalization=checkpoint.normalization,
        training=checkpoint.training,
        history=checkpoint.history,
        extra=checkpoint.extra,
        diameter=checkpoint.diameter,
    )
