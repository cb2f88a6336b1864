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
