"""The plugin as napari sees it: manifest, contributions, dock widgets opened through npe2."""

from __future__ import annotations

import pytest

WIDGETS = ["Segment", "Fine-tune", "Inspect"]


def test_manifest_validates():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-unet")
    assert manifest.name == "napari-unet"
    names = {w.display_name for w in manifest.contributions.widgets}
    assert names == set(WIDGETS)


@pytest.mark.parametrize("name", WIDGETS)
def test_dock_widget_opens_through_manifest(make_napari_viewer, name):
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-unet", name)
    assert widget is not None
    assert dock.isVisible() or dock.isFloating() or dock.parent() is not None


def test_sample_data_opens(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "nuclei")
    kinds = sorted(type(layer).__name__ for layer in viewer.layers)
    assert kinds == ["Image", "Labels"]
    image = viewer.layers["nuclei (synthetic)"].data
    assert image.shape == (512, 512)
    assert viewer.layers["nuclei ground truth"].data.max() > 50


def test_all_three_panels_fit_a_laptop_screen(make_napari_viewer, qtbot):
    """Docked together in a 1366 x 768 window, the panels scroll instead of growing: each
    needs little height, and Fine-tune's Start button is reached by scrolling."""
    from qtpy.QtWidgets import QScrollArea

    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    panels = [viewer.window.add_plugin_dock_widget("napari-unet", name)[1] for name in WIDGETS]
    qtbot.wait(50)
    for panel in panels:
        assert panel.minimumSizeHint().height() < 200, type(panel).__name__
    finetune = panels[1]
    area = finetune.findChild(QScrollArea)
    assert area is not None
    area.ensureWidgetVisible(finetune.start_button)
    qtbot.wait(50)
    corner = finetune.start_button.mapTo(area.viewport(), finetune.start_button.rect().center())
    assert area.viewport().rect().contains(corner)
