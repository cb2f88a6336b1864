"""Sample data for napari's File > Open Sample menu (thin: delegates to the engine)."""

from __future__ import annotations


def nuclei_sample():
    """A synthetic fluorescence image of nuclei with its ground-truth labels.

    Procedurally generated (no licence attached), 512 x 512, uint16, about 300 nuclei of about
    24 px, most of them touching (see :func:`napari_unet.engine.samples.nuclei_sample_arrays`).
    """
    from napari_unet.engine.samples import nuclei_sample_arrays

    image, labels = nuclei_sample_arrays()
    return [
        (image, {"name": "nuclei (synthetic)", "colormap": "gray"}, "image"),
        (labels, {"name": "nuclei ground truth", "visible": False}, "labels"),
    ]
