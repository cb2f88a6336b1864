"""``python -m napari_unet.cli``: the same as ``napari-unet``."""

import sys

from napari_unet.cli.app import main

sys.exit(main())
