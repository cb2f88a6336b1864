"""Qt widgets of napari-unet. The only package that imports qtpy, napari or magicgui."""
