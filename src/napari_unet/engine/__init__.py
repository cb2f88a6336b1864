"""The numerical engine of napari-unet: numpy, scipy, scikit-image and torch only.

Nothing in this package may import qtpy, napari or magicgui (a test checks this in a subprocess).
Submodules are imported on demand; ``import napari_unet.engine`` is cheap.
"""
