"""Dropping a Qt widget's connections to longer-lived objects (the viewer's layer list, the
session) when the widget is destroyed, safely while the garbage collector frees it."""

from __future__ import annotations

from typing import Any


def disconnect_all(connections: list[tuple[Any, Any]]) -> None:
    """Disconnect every ``(emitter, callback)`` pair and empty the list; emitters that are
    already gone are passed over."""
    for emitter, callback in connections:
        try:
            emitter.disconnect(callback)
        except (RuntimeError, TypeError, ValueError):  # already gone
            pass
    connections.clear()


class Disconnector:
    """Connections a Qt widget made to longer-lived objects (the viewer's layer list, the
    session), as ``(emitter, callback)`` pairs, dropped when the widget is destroyed; made by
    :func:`disconnect_when_destroyed`.

    Qt's ``destroyed`` calls :meth:`drop`, a method, and never a closure: when the cyclic
    garbage collector frees a panel, it first empties the functions and closures in the
    panel's reference cycle, and deleting the panel's Qt object then emits ``destroyed``; a
    closure called at that moment crashed Python (its globals were already gone: napari's
    ``gc.collect()`` on closing the viewer did it). A method's function belongs to its class
    and is never emptied; PyQt holds the instance weakly and skips the call once it is gone,
    and what the collector already took from it, :meth:`drop` passes over.

    Attributes
    ----------
    connections : the pairs still to drop (empty once dropped).
    """

    def __init__(self, connections: list[tuple[Any, Any]]) -> None:
        self.connections = connections

    def connect(self, emitter: Any, callback: Any) -> None:
        """Connect ``callback`` to ``emitter`` and drop the pair with the others."""
        emitter.connect(callback)
        self.connections.append((emitter, callback))

    def drop(self, *_: Any) -> None:
        """Disconnect every pair that is left (:func:`disconnect_all`)."""
        connections = self.__dict__.get("connections")
        if connections is not None:
            disconnect_all(connections)


def disconnect_when_destroyed(
    qobject: Any, connections: list[tuple[Any, Any]] | None = None
) -> Disconnector:
    """Drop ``connections`` (a list, which the caller may still extend; none by default), and
    those made later with :meth:`Disconnector.connect`, when ``qobject`` is destroyed. Keep the returned :class:`Disconnector` as long as ``qobject`` lives (an
    attribute of the widget): Qt holds it weakly."""
    disconnector = Disconnector([] if connections is None else connections)
    qobject.destroyed.connect(disconnector.drop)
    return disconnector
