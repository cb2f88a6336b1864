"""The command line: ``napari-unet predict | train | evaluate | sample``.

Runs without a screen: nothing here imports Qt, napari or magicgui, and the work goes through the
same engine functions as the widgets (:mod:`napari_unet.engine.segment`, :mod:`~.training`,
:mod:`~.metrics`).

Errors that a user can fix (a missing file, a file that is not an image, an output that exists,
a model for other channels, ...) are reported as one line, ``napari-unet: error: <sentence>``, on
standard error with exit status 2, before anything is written. Failures while working (out of
memory, a diverging training) exit with status 1, an interruption (Ctrl-C) with 130. ``--debug``
shows the traceback as well.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

PROG = "napari-unet"
#: Suffixes that mark a label image's file name; stripped when pairing files by name.
LABEL_SUFFIXES = ("_labels", "_label", "_masks", "_mask", "_ground_truth", "_gt", "_seg")


class UsageError(ValueError):
    """A problem with the command line or the input that the user can fix (exit status 2)."""


# ---------------------------------------------------------------------------------------------
# output helpers


def _say(message: str, stream: TextIO | None = None) -> None:
    print(message, file=stream or sys.stdout, flush=True)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        text = f"{exc.strerror.lower()}: {exc.filename}"
    else:
        text = str(exc) or type(exc).__name__
    if isinstance(exc, KeyError):
        text = text.strip("'\"")
    # the engine's hints name Python arguments; name the options instead
    text = text.replace("channel_axis=...", "--channel-axis").replace("stack=True", "--stack")
    return " ".join(text.split())


class ProgressBar:
    """A text progress bar on a terminal, redrawn in place; silent when not on a terminal.

    Parameters
    ----------
    label : text shown before the bar.
    stream : where to draw (standard error by default).
    enabled : force on/off; ``None`` draws only when ``stream`` is a terminal.
    width : characters inside the bar.
    """

    def __init__(
        self,
        label: str,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        width: int = 30,
    ):
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty and isatty()) if enabled is None else enabled
        self.label = label
        self.width = width
        self.start = time.perf_counter()
        self._shown = False

    def update(self, done: int, total: int, unit: str = "tiles") -> None:
        if not self.enabled or total <= 0:
            return
        fraction = min(max(done / total, 0.0), 1.0)
        filled = round(fraction * self.width)
        elapsed = time.perf_counter() - self.start
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(
            f"\r{self.label} [{bar}] {fraction * 100:5.1f}% {done}/{total} {unit} {elapsed:6.1f}s"
        )
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


# ---------------------------------------------------------------------------------------------
# file helpers


def _is_tiff_name(path: Path) -> bool:
    from napari_unet.engine.io import IMAGE_SUFFIXES

    return path.suffix.lower() in IMAGE_SUFFIXES


def _expand_inputs(items: Sequence[str], what: str) -> list[Path]:
    """Files named on the command line, with every folder replaced by its TIFF files."""
    from napari_unet.engine.io import list_images

    paths: list[Path] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise UsageError(f"the {what} folder {path} holds no .tif/.tiff files")
            paths.extend(found)
        elif path.exists():
            paths.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return paths


def _base_stem(path: Path) -> str:
    stem = path.stem
    if stem.lower().endswith(".ome"):
        stem = stem[:-4]
    for suffix in LABEL_SUFFIXES:
        if stem.lower().endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _pair_files(
    first: list[Path], second: list[Path], names: tuple[str, str]
) -> list[tuple[Path, Path]]:
    """Pair two file lists by name (suffixes like ``_labels`` ignored), else by sorted order."""
    if len(first) != len(second):
        raise UsageError(
            f"{len(first)} {names[0]} but {len(second)} {names[1]}; give one {names[1][:-1]} "
            f"per {names[0][:-1]}"
        )
    for key in (lambda p: p.stem, _base_stem):
        a = {key(p): p for p in first}
        b = {key(p): p for p in second}
        if len(a) == len(first) and len(b) == len(second) and a.keys() == b.keys():
            return [(a[k], b[k]) for k in sorted(a)]
    return list(zip(sorted(first), sorted(second), strict=True))


def _check_new_outputs(paths: Sequence[Path], *, overwrite: bool, inputs: Sequence[Path] = ()) -> None:
    from napari_unet.engine.io import check_output

    seen: set[Path] = set()
    resolved_inputs = {p.resolve() for p in inputs}
    for path in paths:
        resolved = path.resolve()
        if resolved in resolved_inputs:
            raise UsageError(f"the output {path} would replace an input file; choose another name")
        if resolved in seen:
            raise UsageError(f"two results would be written to the same file {path}")
        seen.add(resolved)
        try:
            check_output(path, overwrite=overwrite)
        except FileExistsError:
            raise UsageError(f"{path} already exists; pass --overwrite to replace it") from None
        except IsADirectoryError:
            raise UsageError(f"the output {path} is a folder, not a file name") from None


# ---------------------------------------------------------------------------------------------
# predict


def _cmd_predict(args: argparse.Namespace) -> int:
    from napari_unet.engine.layout import check_shape
    from napari_unet.engine.models import load_model
    from napari_unet.engine.segment import iter_segment
    from napari_unet.engine.device import resolve_device
    from napari_unet.engine.events import TileDone, TileSizeReduced, drive
    from napari_unet.engine.io import infer_layout, list_images, probe_tiff, read_tiff, write_tiff

    source = Path(args.input).expanduser()
    output = Path(args.output).expanduser()
    probs_out = Path(args.probabilities).expanduser() if args.probabilities else None
    if not source.exists():
        raise FileNotFoundError(f"no such file or folder: {source}")

    jobs: list[tuple[Path, Path, Path | None]] = []
    if source.is_dir():
        if output.exists() and not output.is_dir():
            raise UsageError(f"the input is a folder, so the output must be a folder; {output} is a file")
        if probs_out is not None and probs_out.exists() and not probs_out.is_dir():
            raise UsageError(f"the input is a folder, so --probabilities must be a folder; {probs_out} is a file")
        images = list_images(source)
        same = output.exists() and output.resolve() == source.resolve()
        if same or (probs_out is not None and probs_out.exists() and probs_out.resolve() == source.resolve()):
            images = [p for p in images if not p.stem.endswith(("_labels", "_probabilities"))]
        if not images:
            raise UsageError(f"the folder {source} holds no .tif/.tiff images")
        for image in images:
            stem = _base_stem(image) if image.stem.endswith(".ome") else image.stem
            jobs.append((
                image,
                output / f"{stem}_labels.tif",
                probs_out / f"{stem}_probabilities.tif" if probs_out is not None else None,
            ))
    else:
        if output.is_dir():
            output = output / f"{source.stem}_labels.tif"
        if not _is_tiff_name(output):
            raise UsageError(f"the output {output} must be a .tif or .tiff file")
        if probs_out is not None:
            if probs_out.is_dir():
                probs_out = probs_out / f"{source.stem}_probabilities.tif"
            if not _is_tiff_name(probs_out):
                raise UsageError(f"--probabilities {probs_out} must be a .tif or .tiff file")
        jobs.append((source, output, probs_out))

    outputs = [p for _, labels, probs in jobs for p in (labels, probs) if p is not None]
    _check_new_outputs(outputs, overwrite=args.overwrite, inputs=[image for image, _, _ in jobs])
    resolve_device(args.device)  # an unavailable device is a usage error, before any work

    model = load_model(args.model, device="cpu")
    in_channels = int(model[0].config.in_channels)
    # Check every input's header before any work, so that a bad file stops the run early.
    layouts = []
    for image, _, _ in jobs:
        shape, _dtype, axes = probe_tiff(image)
        channel_axis, stack = infer_layout(
            shape, axes, in_channels=in_channels, channel_axis=args.channel_axis, stack=args.stack
        )
        try:
            check_shape(shape, in_channels=in_channels, channel_axis=channel_axis, stack=stack)
        except ValueError as exc:
            hint = ""
            if channel_axis is not None and args.channel_axis is None and len(shape) == 3:
                hint = f" (read as channels on axis {channel_axis}; pass --stack if the first axis holds planes)"
            raise UsageError(f"{image}: {_one_line(exc)}{hint}") from None
        layouts.append((channel_axis, stack))

    for n, ((image, labels_path, probs_path), (channel_axis, stack)) in enumerate(
        zip(jobs, layouts, strict=True), start=1
    ):
        data = read_tiff(image).data
        label = image.name if len(jobs) == 1 else f"[{n}/{len(jobs)}] {image.name}"
        bar = ProgressBar(label, enabled=False if args.quiet else None)
        gen = iter_segment(
            data,
            model,
            channel_axis=channel_axis,
            stack=stack,
            diameter=args.diameter,
            device=args.device,
            threshold=args.threshold,
            min_size=args.min_size,
            tile_size=args.tile_size,
        )

        def show(event: Any, bar: ProgressBar = bar, name: str = image.name) -> None:
            match event:
                case TileDone():
                    bar.update(event.done, event.total)
                case TileSizeReduced() if not args.quiet:
                    bar.close()
                    _say(f"{name}: out of memory; tile size {event.old} -> {event.new}", sys.stderr)

        try:
            result = drive(gen, show)
        except ValueError as exc:
            raise UsageError(f"{image}: {_one_line(exc)}") from None
        finally:
            bar.close()
        write_tiff(labels_path, result.labels, overwrite=args.overwrite)
        if probs_path is not None:
            write_tiff(
                probs_path, result.probabilities.astype(args.probabilities_dtype), overwrite=args.overwrite
            )
        n_cells = _count_objects(result.labels)
        diameter = f", cell diameter {result.diameter:.1f} px" if result.diameter else ""
        scale = f", scale {result.scale:.2f}" if result.scale != 1.0 else ""
        if not args.quiet:
            noun = "cell" if n_cells == 1 else "cells"
            _say(f"{image.name}: {n_cells} {noun}{diameter}{scale} -> {labels_path}")
    return 0


def _count_objects(labels: np.ndarray) -> int:
    ids = np.unique(labels)
    return int(ids.size - (1 if ids.size and ids[0] == 0 else 0))


# ---------------------------------------------------------------------------------------------
# train


def _read_training_pairs(args: argparse.Namespace, in_channels: int | None):
    """Read images, labels and regions; stacks are split into planes.

    Returns lists of images, int32 labels and bool regions (or None), and the channel axis of
    the (2-D) images.
    """
    from napari_unet.engine.io import infer_layout, read_tiff

    image_files = _expand_inputs(args.images, "images")
    label_files = _expand_inputs(args.labels, "labels")
    pairs = _pair_files(image_files, label_files, ("images", "label images"))
    region_files: list[Path | None] = [None] * len(pairs)
    if args.regions:
        found = _expand_inputs(args.regions, "regions")
        region_pairs = dict(_pair_files([p for p, _ in pairs], found, ("images", "region masks")))
        region_files = [region_pairs[image] for image, _ in pairs]

    images, labels, regions = [], [], []
    channel_axis_out: int | None = None
    for (image_path, label_path), region_path in zip(pairs, region_files, strict=True):
        tif = read_tiff(image_path)
        lab = _as_label_array(read_tiff(label_path).data, label_path)
        reg = read_tiff(region_path).data.astype(bool) if region_path is not None else None
        data = tif.data
        stack = lab.ndim == 3
        if data.ndim == 2 + int(stack):
            channel_axis = None
            if args.channel_axis is not None:
                raise UsageError(f"{image_path} has no channel axis (shape {data.shape})")
        else:
            channel_axis, _ = infer_layout(
                data.shape,
                tif.axes,
                in_channels=in_channels or 1,
                channel_axis=args.channel_axis,
                stack=stack,
            )
        if channel_axis is not None:
            data = np.moveaxis(data, channel_axis, -1)
            channel_axis_out = -1
        expected = data.shape[: 2 + int(stack)]
        if lab.shape != expected:
            raise UsageError(
                f"{label_path} has shape {lab.shape} but the image {image_path.name} needs "
                f"labels of shape {expected}"
            )
        if reg is not None and reg.shape not in (expected, expected[-2:]):
            raise UsageError(f"{region_path} has shape {reg.shape}, not that of {label_path.name}")
        if stack:
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


def _as_label_array(data: np.ndarray, path: Path) -> np.ndarray:
    if data.dtype.kind == "b":
        return data.astype(np.int32)
    if data.dtype.kind == "f":
        if not np.isfinite(data).all() or not np.array_equal(data, np.round(data)):
            raise UsageError(f"{path} is not a label image: it holds fractional values")
    elif data.dtype.kind not in "iu":
        raise UsageError(f"{path} is not a label image (dtype {data.dtype})")
    if data.size and data.min() < 0:
        raise UsageError(f"{path} is not a label image: it holds negative values")
    if data.ndim not in (2, 3):
        raise UsageError(f"{path} is not a label image of shape (Y, X) or (P, Y, X): {data.shape}")
    return data.astype(np.int64 if data.size and data.max() >= 2**31 else np.int32)


def _cmd_train(args: argparse.Namespace) -> int:
    from napari_unet.engine.models import load_model
    from napari_unet.engine.diameter import match_training_diameter
    from napari_unet.engine.device import resolve_device
    from napari_unet.engine.events import CheckpointSaved, StepDone, ValidationDone, drive

    out = Path(args.out).expanduser()
    _check_new_outputs([out], overwrite=args.overwrite)
    resolve_device(args.device)
    from napari_unet.engine.training import FINE_TUNE_FOREGROUND_FRACTION, TrainConfig, iter_train

    scratch = args.start == "scratch"
    net = checkpoint = None
    if not scratch:
        try:
            net, checkpoint = load_model(args.start, device="cpu")
        except FileNotFoundError as exc:
            hint = "; use --from scratch to train a new network" if args.start == "default" else ""
            raise UsageError(f"{_one_line(exc)}{hint}") from None
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
        _say("too few labelled cells to measure their diameter; the model stores none", sys.stderr)
    elif scale.factor != 1.0:
        _say(
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
        foreground_fraction=(
            FINE_TUNE_FOREGROUND_FRACTION
            if args.foreground_fraction is None
            else args.foreground_fraction
        ),
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
    progress = {"last_step": 0, "saved": None}

    def show(event: Any) -> None:
        match event:
            case StepDone(step=step, total=total, loss=loss):
                progress["last_step"] = step
                if not args.quiet and (step % log_every == 0 or step in (1, total)):
                    _say(f"step {step}/{total} loss {loss:.4f}", sys.stderr)
            case ValidationDone() if not args.quiet:
                shown = " ".join(f"{k} {v:.4f}" for k, v in event.metrics.items())
                _say(f"validation at step {event.step}: {shown}", sys.stderr)
            case CheckpointSaved():
                progress["saved"] = event.path

    try:
        result = drive(gen, show)
    except KeyboardInterrupt:
        last_step = progress["last_step"]
        where = f"; the model after step {last_step} is in {out}" if out.exists() and last_step else ""
        raise KeyboardInterrupt(f"training interrupted{where}") from None
    saved = progress["saved"]
    path = saved or (str(result.checkpoint_path) if result.checkpoint_path else str(out))
    diameter = f", cell diameter {stored_diameter:.1f} px" if stored_diameter else ""
    _say(f"wrote {path} ({result.steps_done} steps{diameter})")
    return 0


# ---------------------------------------------------------------------------------------------
# evaluate


def _metric_rows(keys: Sequence[str]) -> list[tuple[str, str]]:
    rows = [(k, "AP@" + k.split("@", 1)[1]) for k in keys if k.startswith("ap@")]
    names = {
        "map": "mAP",
        "f1@0.5": "F1@0.5",
        "precision@0.5": "precision@0.5",
        "recall@0.5": "recall@0.5",
        "seg": "SEG",
        "iou": "foreground IoU",
        "pixel_error": "pixel error",
        "rand_error": "Rand error",
        "mean_matched_iou": "mean matched IoU",
        "tp@0.5": "TP@0.5",
        "fp@0.5": "FP@0.5",
        "fn@0.5": "FN@0.5",
        "n_pred": "objects (prediction)",
        "n_gt": "objects (ground truth)",
    }
    rows += [(k, name) for k, name in names.items() if k in keys]
    return rows


def _format_value(key: str, value: float) -> str:
    if key.startswith(("tp@", "fp@", "fn@", "n_")):
        return f"{round(value)}"
    return f"{value:.4f}"


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from napari_unet.engine.io import list_images, read_tiff
    from napari_unet.engine.metrics import evaluate

    pred = Path(args.prediction).expanduser()
    gt = Path(args.ground_truth).expanduser()
    for path in (pred, gt):
        if not path.exists():
            raise FileNotFoundError(f"no such file or folder: {path}")
    if pred.is_dir() != gt.is_dir():
        raise UsageError("give two files or two folders (prediction and ground truth)")
    if pred.is_dir():
        pairs = _pair_by_name(list_images(pred), list_images(gt))
    else:
        pairs = [(pred, gt)]

    results = []
    for p, g in pairs:
        a = _as_label_array(read_tiff(p).data, p)
        b = _as_label_array(read_tiff(g).data, g)
        if a.shape != b.shape:
            raise UsageError(f"{p.name} has shape {a.shape} but {g.name} has shape {b.shape}")
        results.append((p, g, evaluate(a, b)))

    keys = list(results[0][2])
    mean = {k: float(np.mean([r[2][k] for r in results])) for k in keys}
    if args.json:
        payload = {
            "pairs": [
                {"prediction": str(p), "ground_truth": str(g), "metrics": m} for p, g, m in results
            ],
            "mean": mean,
        }
        _say(json.dumps(payload, indent=2))
        return 0
    rows = _metric_rows(keys)
    if len(results) == 1:
        p, g, m = results[0]
        _say(f"prediction:   {p}\nground truth: {g}")
        width = max(len(name) for _, name in rows)
        for key, name in rows:
            _say(f"  {name:<{width}}  {_format_value(key, m[key])}")
        return 0
    short = [("ap@0.5", "AP@0.5"), ("ap@0.75", "AP@0.75"), ("ap@0.9", "AP@0.9"), ("f1@0.5", "F1@0.5"),
             ("seg", "SEG"), ("iou", "IoU"), ("pixel_error", "pix.err"), ("rand_error", "Rand err")]
    short = [(k, n) for k, n in short if k in keys]
    name_width = max(8, *(len(p.name) for p, _, _ in results))
    _say(f"{'image':<{name_width}}  " + "  ".join(f"{n:>8}" for _, n in short))
    for p, _, m in results:
        _say(f"{p.name:<{name_width}}  " + "  ".join(f"{m[k]:>8.4f}" for k, _ in short))
    _say(f"\nmean over {len(results)} images:")
    width = max(len(name) for _, name in rows)
    for key, name in rows:
        value = f"{mean[key]:.1f}" if key.startswith(("tp@", "fp@", "fn@", "n_")) else f"{mean[key]:.4f}"
        _say(f"  {name:<{width}}  {value}")
    return 0


def _pair_by_name(pred: list[Path], gt: list[Path]) -> list[tuple[Path, Path]]:
    if not pred:
        raise UsageError("the prediction folder holds no .tif/.tiff files")
    if not gt:
        raise UsageError("the ground-truth folder holds no .tif/.tiff files")
    by_stem = {p.stem: p for p in gt}
    by_base = {_base_stem(p): p for p in gt}
    pairs, missing = [], []
    for p in pred:
        match = by_stem.get(p.stem) or by_stem.get(_base_stem(p)) or by_base.get(_base_stem(p))
        if match is None:
            missing.append(p.name)
        else:
            pairs.append((p, match))
    if missing:
        raise UsageError(
            f"no ground truth for {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} "
            "(files are paired by name; suffixes like _labels are ignored)"
        )
    return pairs


# ---------------------------------------------------------------------------------------------
# sample


SAMPLES = ("nuclei",)


def _cmd_sample(args: argparse.Namespace) -> int:
    from napari_unet.engine.samples import nuclei_sample_arrays
    from napari_unet.engine.io import write_labels, write_tiff

    folder = Path(args.output_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--output-dir {folder} is a file, not a folder")
    image_path = folder / f"{args.name}.tif"
    truth_path = folder / f"{args.name}_ground_truth.tif"
    _check_new_outputs([image_path, truth_path], overwrite=args.overwrite)
    image, labels = nuclei_sample_arrays()
    write_tiff(image_path, image, overwrite=args.overwrite)
    write_labels(truth_path, labels, overwrite=args.overwrite)
    _say(f"wrote {image_path} and {truth_path}")
    return 0


# ---------------------------------------------------------------------------------------------
# the parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _share(text: str) -> float:
    """A number from 0 to 1, both included."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line (no usage dump) and raises instead of exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``napari-unet``."""
    from napari_unet import __version__

    parser = _Parser(
        prog=PROG,
        description="Segment cells with a U-Net, train one, and score segmentations, without a screen.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    common.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    devices = ("auto", "cpu", "cuda", "mps")
    p = sub.add_parser(
        "predict",
        parents=[common],
        help="segment a TIFF image (or every TIFF in a folder) into instance labels",
        description="Segment a TIFF image, or every TIFF in a folder, into a uint16 (or uint32) "
        "TIFF of instance labels with the input's spatial shape.",
    )
    p.add_argument("input", metavar="INPUT", help="a TIFF file, or a folder of TIFF files")
    p.add_argument(
        "-o", "--output", required=True, metavar="OUTPUT",
        help="the labels TIFF to write; a folder when INPUT is one (<stem>_labels.tif per image)",
    )
    p.add_argument("--model", default="default", metavar="default|PATH",
                   help="the bundled model (default) or a model file from `napari-unet train`")
    p.add_argument("--device", default="auto", choices=devices, help="compute device (default: auto)")
    p.add_argument("--diameter", type=_positive_float, metavar="PX",
                   help="typical cell diameter in pixels (default: estimated)")
    p.add_argument("--threshold", type=_fraction, default=0.5,
                   help="cell-interior probability threshold (default: 0.5)")
    p.add_argument("--min-size", type=_non_negative_int, metavar="PX",
                   help="drop objects with fewer pixels (default: adaptive)")
    p.add_argument("--tile-size", type=_positive_int, metavar="PX",
                   help="tile side in pixels (default: from the available memory)")
    p.add_argument("--channel-axis", type=int, metavar="AXIS",
                   help="the axis of the channels in a multichannel TIFF (default: detected)")
    p.add_argument("--stack", action=argparse.BooleanOptionalAction, default=None,
                   help="treat the first axis of 3-D data as planes (--stack) or not (--no-stack); "
                   "default: detected")
    p.add_argument("--probabilities", metavar="PATH",
                   help="also write the class probabilities (n_classes before Y, X) to this TIFF "
                   "(a folder when INPUT is one)")
    p.add_argument("--probabilities-dtype", choices=("float32", "float16"), default="float32")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=_cmd_predict)

    t = sub.add_parser(
        "train",
        parents=[common],
        help="train or fine-tune a model on images and label images",
        description="Train a U-Net on TIFF images and matching instance label images (0 = not "
        "painted) and write a model file.",
    )
    t.add_argument("--images", nargs="+", required=True, metavar="PATH", help="image files or folders")
    t.add_argument("--labels", nargs="+", required=True, metavar="PATH",
                   help="label files or folders, matched to the images by name (else by sorted order)")
    t.add_argument("--regions", nargs="+", metavar="PATH",
                   help="optional masks of the annotated regions (non-zero = annotated)")
    t.add_argument("--from", dest="start", default="default", metavar="default|PATH|scratch",
                   help="start from the bundled model (default), a model file, or a new network")
    t.add_argument("-o", "--out", required=True, metavar="MODEL.pt", help="the model file to write")
    t.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    t.add_argument("--steps", type=_positive_int, default=200, help="optimisation steps (default: 200)")
    t.add_argument("--lr", type=_positive_float, help="learning rate (default: the optimizer's preset)")
    t.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                   help="adam, or sgd (the paper's preset: momentum 0.99)")
    t.add_argument("--w0", type=float, default=10.0, help="border weight w0 of the weight map (default: 10)")
    t.add_argument("--sigma", type=_positive_float, default=5.0,
                   help="border weight width sigma in pixels (default: 5)")
    t.add_argument("--augment", type=float, default=1.0, metavar="STRENGTH",
                   help="augmentation strength, 0 for none (default: 1)")
    t.add_argument("--tile-size", type=_positive_int, metavar="PX", help="output tile side (default: auto)")
    t.add_argument("--batch-size", type=_positive_int, default=1, help="tiles per step (default: 1)")
    t.add_argument("--val-fraction", type=float, default=0.15,
                   help="share held out for validation (default: 0.15)")
    t.add_argument("--foreground-fraction", type=_share, metavar="SHARE",
                   help="share of the training tiles centred on a labelled cell "
                   "(default: 0.5, as in the Fine-tune panel)")
    t.add_argument("--checkpoint-every", type=_positive_int, default=50,
                   help="write the model file every this many steps (default: 50)")
    t.add_argument("--log-every", type=_positive_int, help="print the loss every this many steps")
    t.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    t.add_argument("--device", default="auto", choices=devices, help="compute device (default: auto)")
    t.add_argument("--diameter", type=_positive_float, metavar="PX",
                   help="median cell diameter of the training data (default: measured from the labels)")
    t.add_argument("--channel-axis", type=int, metavar="AXIS", help="channel axis of multichannel images")
    t.add_argument("--depth", type=_positive_int, help="with --from scratch: resolution levels")
    t.add_argument("--base-channels", type=_positive_int, help="with --from scratch: channels of the first level")
    t.add_argument("--n-classes", type=int, choices=(2, 3), help="with --from scratch: 3 (with borders) or 2")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser(
        "evaluate",
        parents=[common],
        help="score predicted labels against ground truth",
        description="Score predicted instance labels against ground-truth labels: AP@0.5..0.9, "
        "F1, precision, recall, SEG, foreground IoU, pixel error and Rand error.",
    )
    e.add_argument("prediction", metavar="PRED", help="predicted labels: a TIFF file or a folder")
    e.add_argument("ground_truth", metavar="GT", help="ground-truth labels: a TIFF file or a folder")
    e.add_argument("--json", action="store_true", help="print the metrics as JSON")
    e.set_defaults(func=_cmd_evaluate)

    s = sub.add_parser(
        "sample",
        parents=[common],
        help="write the bundled sample image and its ground truth",
        description="Write NAME.tif and NAME_ground_truth.tif to a folder.",
    )
    s.add_argument("name", choices=SAMPLES, metavar="NAME", help="the sample: nuclei")
    s.add_argument("--output-dir", required=True, metavar="DIR", help="the folder to write into")
    s.add_argument("--overwrite", action="store_true", help="replace existing files")
    s.set_defaults(func=_cmd_sample)
    return parser


def _expected_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [
        UsageError, ValueError, TypeError, FileNotFoundError, FileExistsError,
        IsADirectoryError, NotADirectoryError, PermissionError,
    ]
    return tuple(errors)


def _error(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``napari-unet`` with ``argv`` (default: the process's arguments).

    Returns
    -------
    int
        The exit status: 0 success, 1 a failure while working, 2 bad usage or input (nothing
        written), 130 interrupted.
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        _error(_one_line(exc))
        return 2
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # e.g. `napari-unet evaluate ... | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:  # pragma: no cover
            pass
        return 1
    except KeyboardInterrupt as exc:
        if debug:
            traceback.print_exc()
        _error(_one_line(exc) if str(exc) else "interrupted")
        return 130
    except _expected_errors() as exc:
        if debug:
            traceback.print_exc()
        _error(_one_line(exc))
        return 2
    except Exception as exc:
        if debug:
            traceback.print_exc()
        _error(_one_line(exc))
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
