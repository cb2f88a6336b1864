"""``napari-unet predict``: segment a TIFF image, or every TIFF in a folder, into a uint16 (or
uint32) TIFF of instance labels with the input's spatial shape; large images, zarr / OME-Zarr
stores and dask clusters block by block.
"""

# The block-wise run is napari_unet.cli.predict_blocks. The docstring above, after its first
# ": ", is the description `napari-unet predict --help` prints, so it holds no Sphinx roles.

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.cli.axes import add_axes_option, choose_axes
from napari_unet.cli.files import check_new_outputs, is_tiff_name, output_stem, path_text
from napari_unet.cli.numbers import (
    CONFIDENCE,
    FINITE,
    FRACTION,
    NON_NEGATIVE_INT,
    POSITIVE,
    POSITIVE_INT,
)
from napari_unet.cli.output import ProgressBar, UsageError, error, one_line, say, warnings_about
from napari_unet.engine.device import DEVICE_CHOICES
from napari_unet.engine.label_step import SEED_THRESHOLD
from napari_unet.engine.wording import count


def run(args: argparse.Namespace) -> int:
    """``napari-unet predict``: segment a TIFF, or every TIFF of a folder."""
    from napari_unet.engine.atomic import check_space
    from napari_unet.engine.axes_layout import AxesLayout
    from napari_unet.engine.device import resolve_device
    from napari_unet.engine.events import TileDone, TileSizeReduced, drive
    from napari_unet.engine.io import (
        ImageReadError,
        list_images,
        probe_tiff,
        read_tiff,
        write_tiffs,
    )
    from napari_unet.engine.models import load_model
    from napari_unet.engine.segment import iter_segment

    source = Path(args.input).expanduser()
    output = Path(args.output).expanduser()
    probs_out = Path(args.probabilities).expanduser() if args.probabilities else None
    if not source.exists():
        raise FileNotFoundError(f"no such file or folder: {source}")
    if args.intensity_range is not None and not args.intensity_range[0] < args.intensity_range[1]:
        raise UsageError("--intensity-range: LOW must be below HIGH")
    from napari_unet.cli import predict_blocks

    if predict_blocks.wanted(args, source, output):
        return predict_blocks.run(args, source, output)

    jobs: list[tuple[Path, Path, Path | None]] = []
    if source.is_dir():
        if output.exists() and not output.is_dir():
            raise UsageError(f"the input is a folder, so the output must be a folder; {output} is a file")
        if not output.exists() and is_tiff_name(output):  # not made a folder named like a file
            raise UsageError(
                f"the input is a folder, so the output must be a folder; {output} is a file name"
            )
        if probs_out is not None and probs_out.exists() and not probs_out.is_dir():
            raise UsageError(f"the input is a folder, so --probabilities must be a folder; {probs_out} is a file")
        images = list_images(source)
        same = output.exists() and output.resolve() == source.resolve()
        if same or (probs_out is not None and probs_out.exists() and probs_out.resolve() == source.resolve()):
            images = [p for p in images if not p.stem.endswith(("_labels", "_probabilities"))]
        if not images:
            raise UsageError(f"the folder {source} holds no .tif/.tiff images")
        for image in images:
            stem = output_stem(image)
            jobs.append((
                image,
                output / f"{stem}_labels.tif",
                probs_out / f"{stem}_probabilities.tif" if probs_out is not None else None,
            ))
    else:
        if output.is_dir():
            output = output / f"{output_stem(source)}_labels.tif"
        if not is_tiff_name(output):
            raise UsageError(f"the output {output} must be a .tif or .tiff file")
        if probs_out is not None:
            if probs_out.is_dir():
                probs_out = probs_out / f"{output_stem(source)}_probabilities.tif"
            if not is_tiff_name(probs_out):
                raise UsageError(f"--probabilities {probs_out} must be a .tif or .tiff file")
        jobs.append((source, output, probs_out))

    outputs = [p for _, labels, probs in jobs for p in (labels, probs) if p is not None]
    check_new_outputs(outputs, overwrite=args.overwrite, inputs=[image for image, _, _ in jobs])
    resolve_device(args.device)  # an unavailable device is a usage error, before any work

    model = load_model(model_source(args), device="cpu")
    in_channels = int(model[0].config.in_channels)
    # Check every input's header before any work, so that a bad file stops the run early.
    layouts, needs = [], []
    for image, labels_path, probs_path in jobs:
        shape, _dtype, file_axes = probe_tiff(image)
        axes = choose_axes(shape, file_axes, args, in_channels=in_channels, name=image)
        layout = AxesLayout(shape, axes)
        try:
            layout.check_model(in_channels=in_channels)
        except ValueError as exc:
            hint = ""
            guessed = args.axes is None and args.channel_axis is None and args.stack is None
            if guessed and len(shape) > 2:  # another reading may fit; a 2-D image has no other
                hint = f" (read as {axes}; pass --axes, or --stack for planes first)"
            raise UsageError(f"{image}: {one_line(exc)}{hint}") from None
        layouts.append(layout)
        needs.extend(_output_sizes(shape, layout.channel_axis, labels_path, probs_path, model, args))
    try:
        check_space(needs)
    except OSError as exc:
        raise UsageError(one_line(exc)) from None

    failed = 0
    for n, ((image, labels_path, probs_path), layout) in enumerate(
        zip(jobs, layouts, strict=True), start=1
    ):
        label = image.name if len(jobs) == 1 else f"[{n}/{len(jobs)}] {image.name}"
        bar = ProgressBar(label, enabled=False if args.quiet else None)

        def show(event: Any, bar: ProgressBar = bar, name: str = image.name) -> None:
            match event:
                case TileDone():
                    bar.update(event.done, event.total)
                case TileSizeReduced() if not args.quiet:
                    bar.close()
                    say(f"{name}: out of memory; tile size {event.old} -> {event.new}", sys.stderr)

        about = contextlib.nullcontext() if args.debug else warnings_about(image.name, bar)
        try:
            data, channel_axis = layout.for_model(read_tiff(image).data, in_channels=in_channels)
            gen = iter_segment(
                data,
                model,
                channel_axis=channel_axis,
                stack=layout.stack,
                **{key: getattr(args, key) for key in SEGMENT_OPTIONS},
            )
            with about:
                result = drive(gen, show)
        except ValueError as exc:
            # pixels that fail after the header passed (truncated data, NaN): in a folder the
            # file gets its error line, the other images are still segmented, the exit status is 2
            message = one_line(exc)
            if not isinstance(exc, ImageReadError):  # which names the file itself
                message = f"{image}: {message}"
            if len(jobs) == 1:
                raise UsageError(message) from None
            error(message)
            failed += 1
            continue
        finally:
            bar.close()
        outputs = [(labels_path, layout.from_engine(result.labels))]
        if probs_path is not None:
            prob = result.probabilities.astype(args.probabilities_dtype)
            outputs.append((probs_path, prob.reshape((*layout.lead_shape, *prob.shape[-3:]))))
        write_tiffs(outputs, overwrite=args.overwrite)  # all or nothing
        n_cells = count_objects(result.labels)
        diameter = f", cell diameter {result.diameter:.1f} px" if result.diameter else ""
        scale = f", scale {result.scale:.2f}" if result.scale != 1.0 else ""
        if not args.quiet:
            say(f"{image.name}: {count(n_cells, 'cell')}{diameter}{scale} -> {labels_path}")
    return 2 if failed else 0


def model_source(args: argparse.Namespace) -> Any:
    """``--model`` as :func:`~napari_unet.engine.models.load_model` takes it: a package path
    with the user's ``--trust-package-code``."""
    from napari_unet.engine.packages import PackageSource, is_package_path

    if args.model != "default" and is_package_path(args.model):
        return PackageSource(args.model, trust_code=args.trust_package_code)
    return args.model


def _output_sizes(shape, channel_axis, labels_path, probs_path, model, args) -> list:
    """``(file, bytes)`` of an image's outputs before compression: uint16 labels and, when
    asked for, the probabilities (n_classes per pixel)."""
    spatial = int(np.prod(shape)) // (1 if channel_axis is None else shape[channel_axis])
    sizes = [(labels_path, 2 * spatial)]
    if probs_path is not None:
        per_value = np.dtype(args.probabilities_dtype).itemsize
        sizes.append((probs_path, per_value * int(model[0].config.n_classes) * spatial))
    return sizes


def count_objects(labels: np.ndarray) -> int:
    """The number of nonzero ids in ``labels``."""
    ids = np.unique(labels)
    return int(ids.size - (1 if ids.size and ids[0] == 0 else 0))


#: options passed on to iter_segment as they are
SEGMENT_OPTIONS = (
    "diameter", "device", "threshold", "min_size", "min_confidence", "background_threshold",
    "tile_size", "tta", "intensity_range",
)
HELP = "segment a TIFF image (or every TIFF in a folder) into instance labels"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``napari-unet predict``."""
    p.add_argument("input", type=path_text, metavar="INPUT", help="a TIFF file, a zarr / OME-Zarr store, or a folder of TIFF files")
    p.add_argument(
        "-o", "--output", required=True, type=path_text, metavar="OUTPUT",
        help="the labels TIFF (or .zarr store) to write; a folder when INPUT is one "
        "(<stem>_labels.tif per image)",
    )
    p.add_argument("--model", default="default", type=path_text, metavar="default|PATH",
                   help="the bundled model (default), a model file from `napari-unet train`, or a "
                   "BioImage.IO package (.zip or its rdf.yaml)")
    p.add_argument("--trust-package-code", action="store_true",
                   help="let a foreign BioImage.IO package run its own code (its Python "
                   "architecture or TorchScript program); packages exported by napari-unet never need it")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                   help="compute device (default: %(default)s)")
    p.add_argument("--diameter", type=POSITIVE, metavar="PX",
                   help="typical cell diameter in pixels (default: estimated)")
    p.add_argument("--threshold", type=FRACTION, default=SEED_THRESHOLD,
                   help=f"cell-interior probability threshold (default: {SEED_THRESHOLD:g})")
    p.add_argument("--min-size", type=NON_NEGATIVE_INT, metavar="PX",
                   help="drop objects with fewer pixels (default: 30%% of a cell of the "
                   "diameter, or adaptive)")
    p.add_argument("--min-confidence", type=CONFIDENCE, metavar="P",
                   help="drop objects whose mean cell-interior probability is below P "
                   "(default: the model file's own, chosen on its annotated cells when it was fine-tuned, "
                   "else 0.35; 0 keeps all)")
    p.add_argument("--background-threshold", type=FRACTION, metavar="P",
                   help="where outlines run: a cell's pixels have a background probability "
                   "below P (default: 0.5, the model's own outline; lower draws tighter "
                   "outlines, 0.3 about 10%% less area)")
    p.add_argument("--intensity-range", type=FINITE, nargs=2, metavar=("LOW", "HIGH"),
                   help="map these intensities to the model's 0 and 1 instead of each plane's "
                   "percentiles (e.g. the contrast limits that show the cells well, when bright "
                   "debris or a saturated region swamps the automatic range)")
    p.add_argument("--tile-size", type=POSITIVE_INT, metavar="PX",
                   help="tile side in pixels (default: from the available memory)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average over flips and quarter turns "
                   "(8 times slower; see docs/benchmarks/accuracy.md)")
    p.add_argument("--channel-axis", type=int, metavar="AXIS",
                   help="the axis of the channels in a multichannel TIFF (default: detected)")
    p.add_argument("--stack", action=argparse.BooleanOptionalAction, default=None,
                   help="treat the first axis of 3-D data as planes (--stack) or not (--no-stack); "
                   "default: detected")
    add_axes_option(p)
    p.add_argument("--probabilities", type=path_text, metavar="PATH",
                   help="also write the class probabilities (n_classes before Y, X) to this TIFF "
                   "(a folder when INPUT is one)")
    p.add_argument("--probabilities-dtype", choices=("float32", "float16"), default="float32")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    from napari_unet.cli.predict_blocks import add_arguments as add_block_arguments

    add_block_arguments(p)
