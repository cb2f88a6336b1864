"""``napari-unet export``: write a model as a BioImage.IO model package (a zip the BioImage Model
Zoo, ilastik, deepImageJ, QuPath and bioimageio.core can run).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_unet.cli.files import check_new_outputs, non_empty, path_text
from napari_unet.cli.output import UsageError, one_line, say


def run(args: argparse.Namespace) -> int:
    """``napari-unet export``: a model to a BioImage.IO package."""
    from napari_unet.engine.bioimageio import export_package

    output = Path(args.output).expanduser()
    if output.suffix.lower() != ".zip":
        raise UsageError(f"the package {output} must be a .zip file")
    model = Path(args.model).expanduser()  # a package may be exported again, never onto itself
    inputs = [model] if args.model != "default" and model.is_file() else []
    check_new_outputs([output], overwrite=args.overwrite, inputs=inputs)
    formats = tuple(f for f in ("torchscript", "onnx") if f not in (args.skip or []))
    try:
        results = export_package(
            args.model,
            output,
            name=args.name,
            description=args.description,
            authors=tuple(args.author or ("napari-unet developers",)),
            license=args.license,
            formats=formats,
        )
    except ImportError as exc:
        raise UsageError(one_line(exc)) from None
    if not args.quiet:
        kept = [f for f, why in results.items() if why is None]
        say(f"wrote {output} (weights: {', '.join(kept)})")
        for fmt, why in results.items():
            if why is not None:
                say(f"  {fmt} weights left out: {why}")
    return 0


HELP = "write a model as a BioImage.IO model package (.zip)"


#: ``--name``, ``--description`` and ``--author``: an empty one took the default without a word
filled_text = non_empty("some text")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``napari-unet export``."""
    p.add_argument("model", type=path_text, metavar="MODEL",
                   help="default (the bundled model), a model file (.pt) or a package exported here")
    p.add_argument("-o", "--output", required=True, type=path_text, metavar="PACKAGE.zip", help="the package to write")
    p.add_argument("--name", type=filled_text, help="the model's name in the zoo (default: from the model file)")
    p.add_argument("--description", type=filled_text, help="one or two sentences for the zoo")
    p.add_argument("--author", action="append", type=filled_text, metavar="NAME",
                   help="who trained the model; repeat for several (default: napari-unet developers)")
    p.add_argument("--license", default="BSD-3-Clause", metavar="SPDX",
                   help="the weights' licence, an SPDX id (default: %(default)s)")
    p.add_argument("--skip", action="append", choices=("torchscript", "onnx"),
                   help="leave out a weight format (the state dict is always written)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing package")
