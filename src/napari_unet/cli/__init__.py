"""The command line: ``napari-unet predict | train | evaluate | sample | export``.

One module per command (:mod:`.predict`, :mod:`.train`, :mod:`.evaluate`, :mod:`.sample`,
:mod:`.export`), each with its ``run(args)`` and ``add_arguments(parser)``; :mod:`.app` holds the
parser and :func:`main`; :mod:`.predict_blocks` is ``predict`` block by block; :mod:`.files`,
:mod:`.output`, :mod:`.numbers` and :mod:`.axes` are what the commands share.

Runs without a screen: nothing here imports Qt, napari or magicgui, and the work goes through the
same engine functions as the widgets (:mod:`napari_unet.engine.segment`, :mod:`~.training`,
:mod:`~.metrics`).

Errors that a user can fix (a missing file, a file that is not an image, an output that exists,
a model for other channels, ...) are reported as one line, ``napari-unet: error: <sentence>``, on
standard error with exit status 2, before anything is written. Failures while working (out of
memory, a diverging training) exit with status 1, an interruption (Ctrl-C) with 130, SIGTERM with
143. ``--debug``
shows the traceback as well.
"""

from __future__ import annotations

from napari_unet.cli.app import build_parser, main

__all__ = ["build_parser", "main"]
