"""What a stopped segmentation keeps: the planes whose labels were done.

:func:`~napari_unet.engine.segment.iter_segment` labels a stack plane by plane and yields each
plane's labels as a :class:`~napari_unet.engine.events.PlaneSegmented` event; a consumer that
closes the generator early (Cancel, Ctrl-C) gathers them here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_unet.engine.events import PlaneSegmented

__all__ = ["PartialLabels"]


class PartialLabels:
    """The planes of a segmentation that are done, gathered from its
    :class:`~napari_unet.engine.events.PlaneSegmented` events: what a stopped job keeps.

    Examples
    --------
    >>> partial = PartialLabels()
    >>> gen = iter_segment(stack, model, stack=True)  # doctest: +SKIP
    >>> for event in gen:  # doctest: +SKIP
    ...     partial.add(event)
    ...     if stop_asked():
    ...         gen.close()
    ...         break
    >>> partial.labels()  # (P, Y, X), planes not done are 0  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.planes: dict[int, np.ndarray] = {}
        self.n_planes = 0

    def add(self, event: Any) -> None:
        """Keep the labels of a ``PlaneSegmented`` event (other events are ignored)."""
        if isinstance(event, PlaneSegmented):
            self.planes[event.plane] = event.labels
            self.n_planes = event.n_planes

    @property
    def done(self) -> int:
        """How many planes are done."""
        return len(self.planes)

    def labels(self) -> np.ndarray | None:
        """(P, Y, X) labels (uint16 or uint32) with the planes not done 0, or ``None`` when no
        plane is done."""
        if not self.planes:
            return None
        first = next(iter(self.planes.values()))
        out = np.zeros((self.n_planes, *first.shape), np.int32)
        for plane, labels in self.planes.items():
            out[plane] = labels
        from napari_unet.engine.instances import as_label_dtype

        return as_label_dtype(out)
