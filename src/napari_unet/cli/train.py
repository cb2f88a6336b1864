"""``napari-unet train``: train a U-Net on TIFF images and matching instance label images (0 = not
painted) and write a model file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from napari_unet.cli.axes import add_axes_option
from napari_unet.cli.files import (
    as_label_array,
    base_stem,
    check_new_outputs,
    expand_inputs,
    pair_files,
    path_text,
)
from napari_unet.cli.numbers import (
    CONFIDENCE,
    NON_NEGATIVE,
    POSITIVE,
    POSITIVE_INT,
    SEED,
    SHARE,
    number,
)
from napari_unet.cli.output import UsageError, one_line, say, warning
from napari_unet.engine.device import DEVICE_CHOICES
from napari_unet.engine.train_config import (
    FINE_TUNE_FOREGROUND_FRACTION,
    MAX_LR,
    OPTIMIZERS,
    TrainConfig,
)
from napari_unet.engine.wording import count

#: ``--lr``: what :class:`TrainConfig` accepts, checked before any file is read
LEARNING_RATE = number(float, lambda v: 0 < v <= MAX_LR, f"a number above 0 and at most {MAX_LR:g}")


def _training_layout(args, tif, lab, image_path, in_channels):
    """The :class:`~napari_unet.engine.axes_layout.AxesLayout` of a training image: ``--axes``, or
    detected from the image and its labels (an image with one axis more than its labels has
    channels)."""
    from napari_unet.cli.axes import choose_axes
    from napari_unet.engine.axes import PLANE_LETTERS
    from napari_unet.engine.axes_layout import AxesLayout

    shape = tif.data.shape
    axes = choose_axes(  # as many axes as the labels: no channels, so no guess between them
        shape, tif.axes, args, in_channels=in_channels or 1, name=image_path,
        warn=len(shape) != lab.ndim,
    )
    if not args.axes and args.channel_axis is None:
        if len(shape) == lab.ndim and "C" in axes:  # as many axes as the labels: no channels
            free = next(c for c in PLANE_LETTERS if c not in axes)
            axes = axes.replace("C", free)
        elif len(shape) == lab.ndim + 1 and "C" not in axes:
            raise UsageError(
                f"{image_path}: cannot tell which axis of shape {shape} holds the channels; "
                "pass --axes (e.g. YXC or CYX)"
            )
    if args.channel_axis is not None and len(shape) == lab.ndim:
        raise UsageError(f"{image_path} has no channel axis (shape {shape})")
    return AxesLayout(shape, axes)


def _label_named(path: Path) -> bool:
    """Whether the file name ends in a label suffix such as ``_labels`` (before ``.ome``)."""
    stem = path.stem[:-4] if path.stem.lower().endswith(".ome") else path.stem
    return base_stem(path) != stem


def _read_training_pairs(args: argparse.Namespace, in_channels: int | None):
    """Read images, labels and regions; stacks are split into planes.

    Returns lists of images, int32 labels and bool regions (or None), and the channel axis of
    the (2-D) images.
    """
    from napari_unet.engine.annotation_checks import region_mask
    from napari_unet.engine.io import read_tiff
    from napari_unet.engine.layout import as_planes, instance_ids

    image_files = expand_inputs(args.images, "images")
    label_files = expand_inputs(args.labels, "labels")
    shared = {p.resolve() for p in image_files} & {p.resolve() for p in label_files}
    if shared:  # one folder for both (a.tif beside a_labels.tif): label-named files are labels
        both = sorted(p for p in label_files if p.resolve() in shared)
        image_files = [p for p in image_files if p.resolve() not in shared or not _label_named(p)]
        label_files = [p for p in label_files if p.resolve() not in shared or _label_named(p)]
        if not image_files or not label_files:  # not '1 images but 0 label images'
            given = ", ".join(str(p) for p in both[:3]) + (" ..." if len(both) > 3 else "")
            raise UsageError(
                f"--images and --labels both give {given}"
                + (
                    ": an image cannot be its own labels (where they share files, the label "
                    "images are those named like a_labels.tif or a_masks.tif)"
                    if not label_files
                    else ", named as label images: give the images they label with --images"
                )
            )
    pairs = pair_files(image_files, label_files, ("image", "label image"))
    region_files: list[Path | None] = [None] * len(pairs)
    if args.regions:
        found = expand_inputs(args.regions, "regions")
        region_pairs = dict(pair_files([p for p, _ in pairs], found, ("image", "region mask")))
        region_files = [region_pairs[image] for image, _ in pairs]

    images, labels, regions = [], [], []
    channel_axis_out: int | None = None
    for (image_path, label_path), region_path in zip(pairs, region_files, strict=True):
        tif = read_tiff(image_path)
        lab = as_label_array(read_tiff(label_path).data, label_path)
        reg = None
        if region_path is not None:
            try:
                reg = region_mask(read_tiff(region_path).data)
            except ValueError as exc:
                raise UsageError(f"{region_path}: {one_line(exc)}") from None
        layout = _training_layout(args, tif, lab, image_path, in_channels)
        data, channel_axis = (
            layout.for_model(tif.data, in_channels=in_channels)
            if in_channels
            else layout.to_engine(tif.data)
        )
        try:  # checked here, where the file is known: NaN, too small, channels the model lacks
            channels = in_channels or (1 if channel_axis is None else data.shape[channel_axis])
            as_planes(data, in_channels=channels, channel_axis=channel_axis, stack=layout.stack)
        except ValueError as exc:
            raise UsageError(f"{image_path}: {one_line(exc)}") from None
        if channel_axis is not None:
            channel_axis_out = -1
        if lab.shape != layout.label_shape:
            raise UsageError(
                f"{label_path} has shape {lab.shape} but the image {image_path.name} needs "
                f"labels of shape {layout.label_shape} (axes {layout.label_axes})"
            )
        lab = instance_ids(layout.labels_to_engine(lab))  # a bool mask: its regions per plane
        if reg is not None:
            if reg.shape == layout.label_shape:
                reg = layout.labels_to_engine(reg)
            elif reg.shape != lab.shape[-2:]:
                raise UsageError(
                    f"{region_path} has shape {reg.shape}, not that of {label_path.name}"
                )
        _warn_about_annotation(label_path, lab, reg, stack=layout.stack)
        if layout.stack:
            for p in range(data.shape[0]):
                images.append(data[p])
                labels.append(lab[p])
                regions.append(None if reg is None else (reg[p] if reg.ndim == 3 else reg))
        else:
            images.append(data)
            labels.append(lab)
            regions.append(reg)
    if channel_axis_out is not None and any(img.ndim != 3 for img in images):
        raise UsageError("some training images have channels and some do not")
    return images, labels, regions, channel_axis_out


def _warn_about_annotation(path: Path, labels, regions, *, stack: bool) -> None:
    """Warn, once per file and kind, about label planes that would teach the wrong thing (one id
    on several cells, no background; :func:`~napari_unet.engine.annotation_checks.annotation_warnings`,
    the Fine-tune panel's check). ``labels``: (Y, X), or (P, Y, X) with ``stack``; ``regions``
    alike, (Y, X) for every plane, or None."""
    from napari_unet.engine.annotation_checks import annotation_warnings

    planes = labels if stack else labels[None]
    found: dict[str, list[int]] = {}
    for p, plane in enumerate(planes):
        reg = regions if regions is None or regions.ndim == 2 else regions[p]
        for text in annotation_warnings(plane, reg):
            found.setdefault(text, []).append(p)
    for text, where in found.items():
        if not stack:
            warning(f"{path.name}: {text}")
        else:
            more = f" and {len(where) - 1} more" if len(where) > 1 else ""
            warning(f"{path.name}, plane {where[0]}{more}: {text}")


def run(args: argparse.Namespace) -> int:
    """``napari-unet train``: train or fine-tune a model on images and label images."""
    from napari_unet.engine.device import resolve_device
    from napari_unet.engine.diameter import match_training_diameter
    from napari_unet.engine.events import CheckpointSaved, StepDone, ValidationDone, drive
    from napari_unet.engine.models import load_model, require_unet

    out = Path(args.out).expanduser()
    # the model file may replace the start model (--from), never a training image or mask
    named = ((args.images, "images"), (args.labels, "labels"), (args.regions or [], "regions"))
    inputs = [path for items, what in named for path in expand_inputs(items, what)]
    check_new_outputs([out], overwrite=args.overwrite, inputs=inputs)
    resolve_device(args.device)
    from napari_unet.engine.training import iter_train

    scratch = args.start == "scratch"
    net = checkpoint = None
    if not scratch:
        try:
            net, checkpoint = load_model(args.start, device="cpu")
            require_unet(net, checkpoint)
        except FileNotFoundError as exc:
            hint = "; use --from scratch to train a new network" if args.start == "default" else ""
            raise UsageError(f"{one_line(exc)}{hint}") from None
    images, labels, regions, channel_axis = _read_training_pairs(
        args, None if net is None else int(net.config.in_channels)
    )
    if not any((lab > 0).any() for lab in labels):
        raise UsageError("the label images hold no cells (all pixels are 0)")

    images, labels, regions, scale = match_training_diameter(
        images,
        labels,
        regions,
        model_diameter=None if checkpoint is None else checkpoint.diameter,
        diameter=args.diameter,
    )
    if scale.data_diameter is None:
        kept = (
            "the model stores none"
            if scale.diameter is None
            else f"the data are not rescaled; the model keeps its {scale.diameter:.1f} px"
        )
        warning(f"too few labelled cells to measure their diameter; {kept}")
    elif scale.factor != 1.0 and not args.quiet:
        say(
            f"cells of {scale.data_diameter:.1f} px rescaled by {scale.factor:.2f} to the model's "
            f"training diameter of {scale.model_diameter:.1f} px",
            sys.stderr,
        )
    stored_diameter = scale.diameter

    if scratch:
        from napari_unet.engine.model import UNet, UNetConfig

        in_channels = 1 if channel_axis is None else int(images[0].shape[-1])
        overrides: dict[str, Any] = {"in_channels": in_channels}
        for key in ("depth", "base_channels", "n_classes"):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        net = UNet(UNetConfig.default(**overrides))
        normalization = None
    else:
        normalization = dict(checkpoint.normalization) if checkpoint.normalization else None

    _check_model_space(out, net)
    config = TrainConfig(
        steps=args.steps,
        optimizer=args.optimizer,
        lr=args.lr,
        tile_size=args.tile_size,
        batch_size=args.batch_size,
        w0=args.w0,
        sigma=args.sigma,
        augment_strength=args.augment,
        val_fraction=args.val_fraction,
        foreground_fraction=args.foreground_fraction,
        sample_every=0,
        checkpoint_path=str(out),
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
    )
    extra = {"trained_from": "scratch" if scratch else str(args.start)}
    log_every = args.log_every or max(1, args.steps // 20)
    gen = iter_train(
        net,
        images,
        labels,
        regions=regions if any(r is not None for r in regions) else None,
        channel_axis=channel_axis,
        config=config,
        device=args.device,
        normalization=normalization,
        extra=extra,
        diameter=stored_diameter,
    )
    progress = {"saved": None}

    def show(event: Any) -> None:
        match event:
            case StepDone(step=step, total=total, loss=loss):
                if not args.quiet and (step % log_every == 0 or step in (1, total)):
                    say(f"step {step}/{total} loss {loss:.4f}", sys.stderr)
            case ValidationDone() if not args.quiet:
                shown = " ".join(f"{k} {v:.4f}" for k, v in event.metrics.items())
                say(f"validation at step {event.step}: {shown}", sys.stderr)
            case CheckpointSaved():
                progress["saved"] = event.path

    before = _file_stamp(out)
    try:
        result = drive(gen, show)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"training interrupted{_kept_model(out, before)}") from None
    saved = progress["saved"]
    path = saved or (str(result.checkpoint_path) if result.checkpoint_path else str(out))
    diameter = f", cell diameter {stored_diameter:.1f} px" if stored_diameter else ""
    calibration = _calibrate(Path(path), images, labels, regions, channel_axis, args.device)
    if not args.quiet:
        say(f"wrote {path} ({count(result.steps_done, 'step')}{diameter})")
        if calibration is not None:
            say(f"{calibration.describe()}; predict uses it unless --min-confidence is given")
    return 0


#: The minimum confidence is chosen on at most this many training images (evenly spread), so that
#: a large training set does not add minutes of segmentation after training.
CALIBRATION_IMAGES = 8


def _calibrate(path: Path, images, labels, regions, channel_axis, device):
    """Choose the written model's minimum confidence on the training cells (already at the
    model's scale; at most :data:`CALIBRATION_IMAGES` images) and store it in the file,
    atomically (:mod:`~napari_unet.engine.confidence_calibration`). Returns the calibration, or
    ``None`` (with a warning line) when there is nothing to choose on."""
    from napari_unet.engine.checkpoint import load_checkpoint, save_checkpoint
    from napari_unet.engine.confidence_calibration import (
        calibrate_min_confidence,
        with_calibration,
    )

    last = len(images) - 1
    picks = sorted({round(k * last / (CALIBRATION_IMAGES - 1)) for k in range(CALIBRATION_IMAGES)})
    images, labels, regions = ([seq[i] for i in picks] for seq in (images, labels, regions))
    net, checkpoint = load_checkpoint(path, device="cpu")
    try:
        calibration = calibrate_min_confidence(
            (net, checkpoint), images, labels, regions, channel_axis=channel_axis, device=device
        )
    except ValueError as exc:
        warning(f"the minimum confidence stays the model's: {one_line(exc)}")
        return None
    save_checkpoint(
        path,
        net,
        normalization=checkpoint.normalization,
        training=checkpoint.training,
        history=checkpoint.history,
        extra=with_calibration(checkpoint.extra, calibration),
        diameter=checkpoint.diameter,
    )
    return calibration


def _check_model_space(out: Path, net: Any) -> None:
    """A UsageError before training when the model file would not fit on the disk: float32
    weights plus 1 MB of metadata."""
    from napari_unet.engine.atomic import check_space
    from napari_unet.engine.limits import parameter_count

    try:
        check_space([(out, 4 * parameter_count(net.config) + 2**20)])
    except OSError as exc:
        raise UsageError(one_line(exc)) from None


def _file_stamp(path: Path) -> tuple[int, int] | None:
    """(inode, modification time in ns) of ``path``, or ``None`` when there is no such file."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _kept_model(out: Path, before: tuple[int, int] | None) -> str:
    """"; the model after step N is in OUT" when this run wrote ``out``, N read from the file
    itself: an interrupt can land after a step has completed but before its event was shown."""
    from napari_unet.engine.checkpoint import CheckpointError, read_checkpoint_metadata

    stamp = _file_stamp(out)
    if stamp is None or stamp == before:
        return ""
    try:
        step = read_checkpoint_metadata(out).training.get("steps_done")
    except CheckpointError:
        return ""
    return f"; the model after step {step} is in {out}" if step else f"; the model is in {out}"


HELP = "train or fine-tune a model on images and label images"


def add_arguments(t: argparse.ArgumentParser) -> None:
    """The options of ``napari-unet train``; training options default to TrainConfig's."""
    defaults = TrainConfig()
    t.add_argument("--images", nargs="+", required=True, type=path_text, metavar="PATH", help="image files or folders")
    t.add_argument("--labels", nargs="+", required=True, type=path_text, metavar="PATH",
                   help="label files or folders, matched to the images by name (else by sorted order)")
    t.add_argument("--regions", nargs="+", type=path_text, metavar="PATH",
                   help="optional masks of the annotated regions (non-zero = annotated)")
    t.add_argument("--from", dest="start", default="default", type=path_text,
                   metavar="default|PATH|scratch",
                   help="start from the bundled model (default), a model file, or a new network")
    t.add_argument("-o", "--out", required=True, type=path_text, metavar="MODEL.pt", help="the model file to write")
    t.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    t.add_argument("--steps", type=POSITIVE_INT, default=defaults.steps,
                   help="optimisation steps (default: %(default)s)")
    t.add_argument("--lr", type=LEARNING_RATE,
                   help=f"learning rate, at most {MAX_LR:g} (default: the optimizer's preset)")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer,
                   help="adam, or sgd (the paper's preset: momentum 0.99)")
    t.add_argument("--w0", type=NON_NEGATIVE, default=defaults.w0,
                   help="border weight w0 of the weight map (default: %(default)g)")
    t.add_argument("--sigma", type=POSITIVE, default=defaults.sigma,
                   help="border weight width sigma in pixels (default: %(default)g)")
    t.add_argument("--augment", type=NON_NEGATIVE, default=defaults.augment_strength, metavar="STRENGTH",
                   help="augmentation strength, 0 for none (default: %(default)g)")
    t.add_argument("--tile-size", type=POSITIVE_INT, metavar="PX", help="output tile side (default: auto)")
    t.add_argument("--batch-size", type=POSITIVE_INT, default=defaults.batch_size,
                   help="tiles per step (default: %(default)s)")
    t.add_argument("--val-fraction", type=CONFIDENCE, default=defaults.val_fraction,
                   help="share held out for validation (default: %(default)g)")
    t.add_argument("--foreground-fraction", type=SHARE, metavar="SHARE",
                   default=FINE_TUNE_FOREGROUND_FRACTION,
                   help="share of the training tiles centred on a labelled cell "
                   "(default: %(default)g, as in the Fine-tune panel)")
    t.add_argument("--checkpoint-every", type=POSITIVE_INT, default=defaults.checkpoint_every,
                   help="write the model file every this many steps (default: %(default)s)")
    t.add_argument("--log-every", type=POSITIVE_INT, help="print the loss every this many steps")
    t.add_argument("--seed", type=SEED, default=defaults.seed, help="random seed (default: %(default)s)")
    t.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                   help="compute device (default: %(default)s)")
    t.add_argument("--diameter", type=POSITIVE, metavar="PX",
                   help="median cell diameter of the training data (default: measured from the labels)")
    add_axes_option(t)
    t.add_argument("--channel-axis", type=int, metavar="AXIS", help="channel axis of multichannel images")
    t.add_argument("--depth", type=POSITIVE_INT, help="with --from scratch: resolution levels")
    t.add_argument("--base-channels", type=POSITIVE_INT, help="with --from scratch: channels of the first level")
    t.add_argument("--n-classes", type=int, choices=(2, 3), help="with --from scratch: 3 (with borders) or 2")
