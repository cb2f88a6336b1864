"""Which model the widgets of one viewer share: the bundled default, a file, or a fine-tuned one.

The Segment widget reads the current model from here; the Fine-tune widget starts from it and
puts its result back. This is plain Python (a psygnal signal, no Qt), and it never loads a model
on the GUI thread: an entry holds what :func:`napari_unet.engine.models.load_model` accepts, or a
factory that builds it, and the worker thread resolves it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from psygnal import Signal

from napari_unet.engine.label_step import MIN_CONFIDENCE

DEFAULT_LABEL = "bundled default"


@dataclass(eq=False)
class ModelEntry:
    """One model the user can pick.

    Parameters
    ----------
    label : what the widgets show, e.g. ``"bundled default"``, ``"fine-tuned (step 200)"``.
    source : anything :func:`napari_unet.engine.models.load_model` accepts (``"default"``, a path,
        a ``UNet``, a ``(UNet, Checkpoint)`` pair), or a zero-argument callable returning one.
        A callable is called once, in a worker thread, by :meth:`resolve`.
    kind : ``"default"``, ``"file"`` or ``"fine-tuned"``.
    normalization : the intensity normalisation to train and predict with (from a checkpoint or a
        training run), or ``None`` to let the engine decide.
    step : for fine-tuned models, the training step the weights come from.
    min_confidence : the model's own minimum confidence (chosen on its annotated cells when it
        was fine-tuned; the default for the bundled model), which the Segment panel takes when
        the model becomes current; ``None``: the model chose none (the panel's value stays).
    """

    label: str
    source: Any
    kind: str = "default"
    normalization: Any = None
    step: int | None = None
    min_confidence: float | None = None
    _resolved: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def resolve(self) -> Any:
        """Return the ``model`` argument for the engine, building it on first use.

        Call this from a worker thread: a factory may build a network.
        """
        if not callable(self.source) or _is_network(self.source):
            return self.source
        with self._lock:
            if self._resolved is None:
                self._resolved = self.source()
            return self._resolved


class Session:
    """The models known to one viewer, and the current one.

    Attributes
    ----------
    changed : psygnal signal emitted with the new current :class:`ModelEntry`.
    segment_options : the Segment panel's options that decide a result (diameter, threshold,
        minimum area, test-time augmentation; empty: the engine's defaults, as in a new
        panel); the Fine-tune preview segments with them, so that it shows what Segment gives.
    """

    changed = Signal(object)

    def __init__(self) -> None:
        self.default = ModelEntry(
            DEFAULT_LABEL, "default", kind="default", min_confidence=MIN_CONFIDENCE
        )
        self.current: ModelEntry = self.default
        #: the model current before ``current``, which :meth:`fall_back` returns to
        self.previous: ModelEntry | None = None
        self.fine_tuned: ModelEntry | None = None
        self.segment_options: dict[str, Any] = {}

    def set_current(self, entry: ModelEntry) -> None:
        """Make ``entry`` the current model and tell every widget."""
        if entry.kind == "fine-tuned":
            self.fine_tuned = entry
        if entry is not self.current:
            self.previous = self.current
        self.current = entry
        self.changed.emit(entry)

    def fall_back(self, failed: ModelEntry) -> ModelEntry | None:
        """``failed`` could not be loaded: make the model current before it current again (the
        bundled default when there was none) and return it. ``None``, and nothing changes, when
        ``failed`` is no longer the current model or is the bundled default itself."""
        if failed is not self.current or failed is self.default:
            return None
        back = self.previous if self.previous not in (None, failed) else self.default
        if self.fine_tuned is failed:
            self.fine_tuned = None
        self.set_current(back)
        return back

    def entries(self) -> list[ModelEntry]:
        """The models to offer, current first-class choices only (files are picked separately)."""
        out = [self.default]
        if self.fine_tuned is not None:
            out.append(self.fine_tuned)
        if self.current not in out:
            out.append(self.current)
        return out


def _is_network(source: Any) -> bool:
    """Whether ``source`` is a network (callable, but a model, not a factory)."""
    return hasattr(source, "state_dict") and hasattr(source, "parameters")


_SESSIONS: weakref.WeakKeyDictionary[Any, Session] = weakref.WeakKeyDictionary()


def session_for(viewer: Any) -> Session:
    """The :class:`Session` shared by all napari-unet widgets of ``viewer``."""
    session = _SESSIONS.get(viewer)
    if session is None:
        session = Session()
        _SESSIONS[viewer] = session
    return session


def entry_from_factory(label: str, factory: Callable[[], Any], **kwargs: Any) -> ModelEntry:
    """A :class:`ModelEntry` whose model is built lazily by ``factory`` (in a worker thread)."""
    return ModelEntry(label, factory, **kwargs)
