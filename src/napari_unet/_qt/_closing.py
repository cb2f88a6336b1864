"""Noticing that a panel was closed, so that it can stop its jobs.

A panel goes in three ways: napari's close button takes it out of its dock (its parent becomes
``None``; napari does not delete it), ``close()`` closes it, or its Qt object is deleted. A job
still running then added its layers to the viewer afterwards, and the status updates of a
deleted panel failed with 'wrapped C/C++ object has been deleted'.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QEvent, QObject


class ClosingWatch(QObject):
    """Calls ``on_close`` whenever ``panel`` is closed in one of the three ways (module notes).

    Keep it as an attribute of the panel (like a
    :class:`~napari_unet._qt._disconnect.Disconnector`); ``on_close`` must cancel jobs first and
    touch the panel's Qt widgets after (they are gone when the panel was deleted).

    Attributes
    ----------
    closed : whether the panel is closed now (it is open again once it has a parent or is
        shown).
    """

    def __init__(self, panel: Any, on_close: Callable[[], None]) -> None:
        super().__init__()
        self.on_close = on_close
        self.closed = False
        panel.installEventFilter(self)
        panel.destroyed.connect(self._destroyed)

    def eventFilter(self, watched: Any, event: Any) -> bool:
        kind = event.type()
        if kind == QEvent.Type.Close or (
            kind == QEvent.Type.ParentChange and watched.parent() is None
        ):
            self._close()
        elif kind in (QEvent.Type.ParentChange, QEvent.Type.Show):
            self.closed = False
        return False

    def _close(self) -> None:
        self.closed = True
        self.on_close()

    def _destroyed(self, *_: Any) -> None:
        # a method, never a closure (see _disconnect.Disconnector); when the garbage collector
        # frees the panel, what it emptied already (the panel's jobs) is passed over
        self.__dict__["closed"] = True
        on_close = self.__dict__.get("on_close")
        if on_close is not None:
            try:
                on_close()
            except AttributeError:
                pass
