"""The one-call API shared by the command line, the widgets and scripts: the public names of the
engine modules that do the work, in one place.

* :func:`load_model` (:mod:`~napari_unet.engine.models`): the bundled model, a file, a network;
* :func:`iter_segment`, :func:`segment`, :class:`SegmentResult`
  (:mod:`~napari_unet.engine.segment`): an image in, instance labels out;
* the cell diameter (:mod:`~napari_unet.engine.diameter`) and the input layout
  (:mod:`~napari_unet.engine.layout`);
* :func:`nuclei_sample_arrays` (:mod:`~napari_unet.engine.samples`).

Importing it is cheap: torch and the network are imported when they are first used.
"""

from __future__ import annotations

from napari_unet.engine.diameter import (
    AUTO_DIAMETER_TOLERANCE,
    MIN_DIAMETER,
    estimate_diameter,
    match_training_diameter,
    model_diameter,
    rescale_factor,
    rescale_training_data,
)
from napari_unet.engine.layout import as_planes
from napari_unet.engine.layout import check_shape as check_image_shape
from napari_unet.engine.models import bundled_model_path, load_model
from napari_unet.engine.samples import nuclei_sample_arrays
from napari_unet.engine.segment import SegmentResult, iter_segment, segment

__all__ = [
    "AUTO_DIAMETER_TOLERANCE",
    "MIN_DIAMETER",
    "SegmentResult",
    "as_planes",
    "bundled_model_path",
    "check_image_shape",
    "estimate_diameter",
    "iter_segment",
    "load_model",
    "match_training_diameter",
    "model_diameter",
    "nuclei_sample_arrays",
    "rescale_factor",
    "rescale_training_data",
    "segment",
]
