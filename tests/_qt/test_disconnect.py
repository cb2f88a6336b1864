"""A widget's connections to longer-lived objects are dropped when it is destroyed, by a method
rather than a closure (a closure emptied by the garbage collector and then called by Qt's
``destroyed`` crashed Python when napari closed the viewer)."""

from qtpy import sip
from qtpy.QtWidgets import QWidget

from napari_unet._qt._disconnect import Disconnector, disconnect_when_destroyed


class Emitter:
    def __init__(self):
        self.callbacks = []

    def connect(self, callback):
        self.callbacks.append(callback)

    def disconnect(self, callback):
        self.callbacks.remove(callback)


def _handler(*_):
    pass


def test_destroying_the_widget_drops_its_connections(qtbot):
    emitter = Emitter()
    widget = QWidget()
    emitter.connect(_handler)
    connections = [(emitter, _handler)]
    disconnector = disconnect_when_destroyed(widget, connections)
    connections.append((Emitter(), _handler))  # added later, gone already: passed over
    sip.delete(widget)
    assert emitter.callbacks == [] and connections == []
    assert disconnector.connections == []


def test_the_slot_is_a_method_and_survives_an_emptied_instance(qtbot):
    widget = QWidget()
    emitter = Emitter()
    emitter.connect(_handler)
    disconnector = disconnect_when_destroyed(widget, [(emitter, _handler)])
    assert Disconnector.drop.__qualname__ == "Disconnector.drop"  # no closure to empty
    disconnector.__dict__.clear()  # what the collector's clearing leaves of it
    sip.delete(widget)  # calls drop: nothing left to do, and no error
    assert emitter.callbacks == [_handler]


def test_a_collected_disconnector_is_not_called(qtbot):
    widget = QWidget()
    emitter = Emitter()
    emitter.connect(_handler)
    disconnect_when_destroyed(widget, [(emitter, _handler)])  # not kept: Qt holds it weakly
    sip.delete(widget)
    assert emitter.callbacks == [_handler]


def test_a_layer_picker_lets_go_of_every_layer(make_napari_viewer):
    """A picker listens to each layer's name (a rename keeps it chosen); it stops listening to a
    removed layer, and to all of them when it is destroyed (napari holds plain functions
    strongly, so a closed panel's picker stayed referenced by every layer)."""
    import numpy as np
    from magicgui.widgets import ComboBox
    from napari.layers import Image

    from napari_unet._qt._layers import layer_combo

    viewer = make_napari_viewer()
    first = viewer.add_image(np.zeros((8, 8)), name="first")
    combo = layer_combo(viewer, Image, label="image")
    second = viewer.add_image(np.zeros((8, 8)), name="second")
    assert isinstance(combo, ComboBox)

    def listens(layer):
        return len(layer.events.name.callbacks)

    kept = combo._layer_list_disconnector.connections
    assert any(emitter is second.events.name for emitter, _ in kept)
    viewer.layers.remove(second)  # not held on to by the picker
    assert not any(emitter is second.events.name for emitter, _ in kept)
    with_picker = listens(first)
    sip.delete(combo.native)
    assert listens(first) == with_picker - 1
    viewer.add_image(np.zeros((8, 8)), name="third")  # the destroyed picker is not called
