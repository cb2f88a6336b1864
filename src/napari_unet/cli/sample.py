"""``napari-unet sample``: write NAME.tif and NAME_ground_truth.tif to a folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_unet.cli.files import check_new_outputs, path_text
from napari_unet.cli.output import UsageError, say

SAMPLES = ("nuclei",)


def run(args: argparse.Namespace) -> int:
    """``napari-unet sample``: write a sample image and its ground truth."""
    from napari_unet.engine.instances import as_label_dtype
    from napari_unet.engine.io import write_tiffs
    from napari_unet.engine.samples import nuclei_sample_arrays

    folder = Path(args.output_dir).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--output-dir {folder} is a file, not a folder")
    image_path = folder / f"{args.name}.tif"
    truth_path = folder / f"{args.name}_ground_truth.tif"
    check_new_outputs([image_path, truth_path], overwrite=args.overwrite)
    image, labels = nuclei_sample_arrays()
    # together or not at all: an interrupt never leaves an image without its ground truth
    write_tiffs(
        [(image_path, image), (truth_path, as_label_dtype(labels))], overwrite=args.overwrite
    )
    if not args.quiet:
        say(f"wrote {image_path} and {truth_path}")
    return 0


HELP = "write the bundled sample image and its ground truth"


def add_arguments(s: argparse.ArgumentParser) -> None:
    """The options of ``napari-unet sample``."""
    s.add_argument("name", choices=SAMPLES, metavar="NAME", help="the sample: nuclei")
    s.add_argument("--output-dir", required=True, type=path_text, metavar="DIR", help="the folder to write into")
    s.add_argument("--overwrite", action="store_true", help="replace existing files")
