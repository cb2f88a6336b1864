"""The numerical engine of napari-unet: numpy, scipy, scikit-image and torch only.

Nothing in this package may depend on the GUI (the Qt bindings, the viewer, the widget
toolkit): a test checks in a subprocess that importing it loads none of them.
Submodules are imported on demand, so importing the package itself is cheap.
"""
