"""The bundled sample data (synthetic, so no data licence is involved)."""

from __future__ import annotations

import numpy as np

__all__ = ["nuclei_sample_arrays"]


def nuclei_sample_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The bundled sample: a synthetic 512 x 512 uint16 nuclei image and its int32 labels.

    Nuclei of about 24 px diameter (the bundled model was trained at 27.7 px; the automatic
    diameter estimate rescales), half of them touching, dimmer at the rim as ellipsoidal
    nuclei are in widefield fluorescence, with white noise of 2 % of the signal (the
    high-frequency noise of the Fluo-N2DL-HeLa frames is about that, relative to their
    nucleus-to-background contrast). Shared by napari's *File > Open Sample* menu and
    ``napari-unet sample nuclei``.
    """
    from napari_unet.engine.synthetic import synthetic_nuclei

    return synthetic_nuclei(
        shape=(512, 512), n_cells=90, diameter=24.0, noise=0.02, profile="ellipsoid", rng=2015
    )
