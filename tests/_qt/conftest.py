"""Qt tests run a real napari viewer; they need a display (pytest-xvfb starts Xvfb)."""
