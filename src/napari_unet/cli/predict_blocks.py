"""``napari-unet predict`` block by block: zarr / OME-Zarr stores, images too large for memory,
and dask clusters (``--scheduler``).

Chosen when the input or the output is a zarr store, when ``--scheduler``, ``--workers`` or
``--block-size`` is given, or when a TIFF's planes have more than :data:`BLOCKWISE_PIXELS` pixels
and no ``--probabilities`` are asked for (the in-memory pipeline needs about
55 bytes per pixel; block by block the memory is bounded by the block size). The labels go to a
temporary store beside the output and are moved into place only when every block is done
(:class:`~napari_unet.engine.zarr_io.LabelStore`); a TIFF output is written from that store one
strip of tiles at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from napari_unet.cli.numbers import POSITIVE_INT, number
from napari_unet.cli.output import ProgressBar, UsageError, one_line, say
from napari_unet.engine.wording import count

#: A TIFF plane with more pixels than this (4096²) is segmented block by block.
BLOCKWISE_PIXELS = 2**24
#: a block side: the block-wise engine needs at least 64 pixels
BLOCK_SIDE = number(int, lambda v: v >= 64, "a number >= 64")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The block-wise options of ``napari-unet predict``."""
    p.add_argument(
        "--scheduler", metavar="local|ADDRESS",
        help="segment block by block on a dask cluster: 'local' starts one on this machine "
        "(--workers processes), an address (tcp://host:8786) uses a running `dask scheduler`",
    )
    p.add_argument("--workers", type=POSITIVE_INT, metavar="N",
                   help="worker processes of --scheduler local (default: 2)")
    p.add_argument("--block-size", type=BLOCK_SIDE, metavar="PX",
                   help="side of a block in pixels for block-wise segmentation (default: 2048)")


def wanted(args: argparse.Namespace, source: Path, output: Path) -> bool:
    """Whether this run goes block by block."""
    from napari_unet.engine.zarr_io import is_zarr_path

    if args.scheduler is not None or args.workers is not None or args.block_size is not None:
        return True
    if is_zarr_path(source) or output.suffix.lower() == ".zarr":
        return True
    if source.is_file() and not args.probabilities:  # probabilities: in memory, as before
        from napari_unet.cli.axes import choose_axes
        from napari_unet.engine.io import probe_tiff

        try:
            shape, _, file_axes = probe_tiff(source)
            # the axes predict reads (--axes, else detected; the model's channels do not move
            # Y and X), without the warning the in-memory or block-wise run gives
            axes = choose_axes(shape, file_axes, args, in_channels=1, name=source, warn=False)
        except ValueError:
            return False  # the in-memory path reports it
        y, x = axes.index("Y"), axes.index("X")
        if any(c not in "CYX" for c in axes[min(y, x) :]):
            return False  # planes after Y or X (YXZ): block-wise refuses them, memory may do
        return shape[y] * shape[x] > BLOCKWISE_PIXELS
    return False


def _output_for(source: Path, output: Path) -> Path:
    from napari_unet.cli.files import output_stem
    from napari_unet.engine.zarr_io import is_zarr_path

    if output.is_dir() and not is_zarr_path(output):
        stem = output_stem(source)  # as in memory: a.ome.tif -> a, day.1.tif -> day.1
        return output / (f"{stem}_labels.zarr" if is_zarr_path(source) else f"{stem}_labels.tif")
    return output


def _remedy(layout: Any, zarr_out: bool) -> str:
    """What the command line can do about a layout that ``AxesLayout.for_blocks`` refused (the
    engine's sentence says what is wrong, not which option to use): planes after Y and X, or for
    a store plane axes out of NGFF's order; ``""`` for other refusals."""
    from napari_unet.engine.zarr_io import ngff_axes

    if layout is None:
        return ""
    if not layout.label_axes.endswith("YX"):
        return ": give --axes in that order if the image is read wrongly, else rewrite it with Y and X last"
    if zarr_out:
        try:
            ngff_axes(layout.label_axes)
        except ValueError:
            return "; write a TIFF (-o labels.tif) instead"
    return ""


def run(args: argparse.Namespace, source: Path, output: Path) -> int:
    """Segment one image block by block; see the module notes."""
    from napari_unet.cli.axes import choose_axes
    from napari_unet.cli.files import check_new_outputs, is_tiff_name
    from napari_unet.engine.atomic import check_space
    from napari_unet.engine.axes_layout import AxesLayout
    from napari_unet.engine.block_plan import plane_axes_shape, require_own_unet
    from napari_unet.engine.blockwise import DEFAULT_BLOCK, as_dask_planes, iter_segment_blockwise
    from napari_unet.engine.device import resolve_device
    from napari_unet.engine.models import load_model
    from napari_unet.engine.zarr_io import check_store_target, is_zarr_path, open_lazy, squeeze_axes

    if source.is_dir() and not is_zarr_path(source):
        raise UsageError("block-wise segmentation (--scheduler, zarr) takes one image, not a folder of TIFFs")
    if args.probabilities:
        raise UsageError("--probabilities is not available block by block (zarr, --scheduler, large images)")
    if args.workers is not None and args.scheduler != "local":
        raise UsageError("--workers sets the size of --scheduler local")
    output = _output_for(source, output)
    zarr_out = output.suffix.lower() == ".zarr"
    if not zarr_out and not is_tiff_name(output):
        raise UsageError(f"the output {output} must be a .zarr store or a .tif file")
    if output.resolve() == source.resolve():
        raise UsageError(f"the output {output} would replace the input; choose another name")
    if output.resolve() in source.resolve().parents:  # e.g. plate.zarr/0 -o plate.zarr
        raise UsageError(f"the output {output} holds the input {source}, which it would replace; choose another name")
    if zarr_out:
        try:
            check_store_target(output, overwrite=args.overwrite)
        except FileExistsError as exc:
            raise UsageError(one_line(exc)) from None
    else:
        check_new_outputs([output], overwrite=args.overwrite, inputs=[source])
    device = args.device
    resolve_device(device)

    from napari_unet.cli.predict import model_source

    model = load_model(model_source(args), device="cpu")
    try:
        require_own_unet(*model)
    except ValueError as exc:
        raise UsageError(one_line(exc)) from None
    in_channels = int(model[0].config.in_channels)
    try:
        image, file_axes = open_lazy(source)
        image, file_axes = squeeze_axes(image, file_axes)
    except ValueError as exc:
        raise UsageError(f"{source}: {one_line(exc)}") from None
    axes = choose_axes(image.shape, file_axes, args, in_channels=in_channels, name=source)
    layout = None
    try:
        layout = AxesLayout(image.shape, axes)
        image, channel_axis, stack = layout.for_blocks(image, in_channels=in_channels, ngff=zarr_out)
        planes = as_dask_planes(image, channel_axis=channel_axis, stack=stack)
    except ValueError as exc:
        raise UsageError(f"{source}: {one_line(exc)} (read as {axes}){_remedy(layout, zarr_out)}") from None
    n_planes, _, rows, cols = (int(n) for n in planes.shape)
    out_shape = (*plane_axes_shape(image, channel_axis=channel_axis, stack=stack), rows, cols)
    step = 2 ** int(model[0].config.depth)
    block = -(-(args.block_size or DEFAULT_BLOCK) // step) * step
    chunks = (1,) * (len(out_shape) - 2) + (min(block, rows), min(block, cols))
    try:
        check_space([(output, 4 * n_planes * rows * cols)])
    except OSError as exc:
        raise UsageError(one_line(exc)) from None

    bar = ProgressBar(source.name, enabled=False if args.quiet else None)

    def show(event: Any) -> None:
        from napari_unet.engine.events import BlockDone, Note

        match event:
            case BlockDone():
                bar.update(event.done, event.total, unit="blocks")
            case Note() if not args.quiet:
                bar.close()
                say(f"{source.name}: note: {event.message}", sys.stderr)

    from napari_unet.engine.cluster import connect
    from napari_unet.engine.events import drive
    from napari_unet.engine.zarr_io import LabelStore, remove_stale_stores, write_tiff_from_array

    cluster = connect(args.scheduler, workers=args.workers) if args.scheduler else contextlib.nullcontext()
    with cluster as client, contextlib.ExitStack() as stack_:
        if zarr_out:
            store = stack_.enter_context(LabelStore(
                output, out_shape, chunks=chunks, overwrite=args.overwrite, axes=layout.label_axes))
        else:  # labels first to a store beside the TIFF, then the TIFF from it
            remove_stale_stores(output)
            folder = stack_.enter_context(tempfile.TemporaryDirectory(
                prefix=f".{output.name}.{os.getpid()}.", suffix=".tmp", dir=output.parent))
            store = stack_.enter_context(LabelStore(
                Path(folder) / "labels.zarr", out_shape, chunks=chunks, axes=layout.label_axes))
        gen = iter_segment_blockwise(
            image, model, out=store.array, channel_axis=channel_axis, stack=stack,
            block_size=block, client=client, diameter=args.diameter, device=device,
            threshold=args.threshold, min_size=args.min_size, min_confidence=args.min_confidence,
            background_threshold=args.background_threshold, tile_size=args.tile_size,
            tta=args.tta, intensity_range=args.intensity_range,
        )
        try:
            result = drive(gen, show)
        except ValueError as exc:
            raise UsageError(f"{source}: {one_line(exc)}") from None
        finally:
            bar.close()
        if zarr_out:
            store.commit()
        else:
            dtype = "uint16" if result.n_objects < 2**16 else "uint32"
            write_tiff_from_array(output, store.array, dtype=dtype, overwrite=args.overwrite)
    if not args.quiet:
        diameter = f", cell diameter {result.diameter:.1f} px" if result.diameter else ""
        scale = f", scale {result.scale:.2f}" if result.scale != 1.0 else ""
        where = f" on {args.scheduler}" if args.scheduler else ""
        cells, blocks = count(result.n_objects, "cell"), count(result.n_blocks, "block")
        say(f"{source.name}: {cells}{diameter}{scale}, {blocks}{where} -> {output}")
    return 0
