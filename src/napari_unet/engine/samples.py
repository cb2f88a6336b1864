"""The bundled sample data (procedural, so no data licence is involved)."""

from __future__ import annotations

import numpy as np

__all__ = ["nuclei_sample_arrays"]


def nuclei_sample_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The bundled sample: a procedural 512 x 512 uint16 nuclei image and its int32 labels.

    A hard draw of :func:`napari_unet.engine.nucleus_generator.generate_nuclei` (seed 2015):
    about 300 nuclei of about 24 px, most of them in touching clusters, dim, bright mitotic and
    elongated ones, uneven background, defocus and Poisson-Gaussian noise. Shared by napari's
    *File > Open Sample* menu and ``napari-unet sample nuclei``.
    """
    from dataclasses import replace

    from napari_unet.engine.nucleus_generator import generate_nuclei, random_style

    style = replace(random_style(2015, diameter=24.0, hard=True), bit_depth=16)
    return generate_nuclei((512, 512), style, rng=2015)
