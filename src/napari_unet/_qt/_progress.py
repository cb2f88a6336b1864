"""Progress inside a panel: a bar and a line that says how far a job is, how long it has run
and about how long it still needs (plane i of n, percentage, elapsed, ETA).

Updating it costs a few attribute writes per event; Qt repaints the bar with the next frame, so
no event is processed here (napari's own progress bar processes events while it redraws).
"""

from __future__ import annotations

import time
from typing import Any

from qtpy.QtWidgets import QProgressBar

#: the bar's resolution (Qt progress bars count whole numbers)
BAR_MAXIMUM = 1000


def duration(seconds: float) -> str:
    """``"45 s"``, ``"3 min 05 s"`` or ``"1 h 02 min"``."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def remaining(fraction: float, elapsed: float) -> float | None:
    """Seconds still needed when ``fraction`` of the work took ``elapsed`` seconds (``None``
    until there is something to go by)."""
    if not 0.0 < fraction <= 1.0 or elapsed <= 0.0:
        return None
    return elapsed * (1.0 - fraction) / fraction


class PanelProgress:
    """A progress bar with its text (hidden while no job runs).

    Attributes
    ----------
    bar : the ``QProgressBar`` to put in the panel's layout.
    started : ``time.perf_counter()`` of :meth:`start`.
    fraction : the part of the job done, 0 to 1.
    """

    def __init__(self) -> None:
        self.bar = QProgressBar()
        self.bar.setRange(0, BAR_MAXIMUM)
        self.bar.setTextVisible(True)
        self.bar.setVisible(False)
        self.started = time.perf_counter()
        self.fraction = 0.0

    def start(self, text: str = "starting…") -> None:
        """Show the bar at 0 and start the clock."""
        self.started = time.perf_counter()
        self.fraction = 0.0
        self.bar.setValue(0)
        self.bar.setFormat(text)
        self.bar.setVisible(True)

    def elapsed(self) -> float:
        """Seconds since :meth:`start`."""
        return time.perf_counter() - self.started

    def show(self, fraction: float, what: str = "") -> str:
        """Show ``fraction`` done (``what``: e.g. ``"plane 3 of 12"``); returns the text shown,
        e.g. ``"plane 3 of 12 · 42 % · 3 s, about 4 s left"``.

        Events can arrive out of order (napari's progress bar processes events while it
        redraws, so one event's handler can run inside another's): an older, smaller fraction
        leaves the bar as it is.
        """
        fraction = min(max(float(fraction), 0.0), 1.0)
        elapsed = self.elapsed()
        left = remaining(fraction, elapsed)
        parts = [what] if what else []
        parts.append(f"{100 * fraction:.0f} %")
        timing = duration(elapsed)
        if left is not None and fraction < 1.0:
            timing += f", about {duration(left)} left"
        parts.append(timing)
        return self.set(fraction, " · ".join(parts))

    def set(self, fraction: float, text: str, *, monotonic: bool = True) -> str:
        """Show ``fraction`` done with ``text``; returns the text shown. With ``monotonic`` a
        smaller (older) fraction than the one shown leaves the bar as it is."""
        fraction = min(max(float(fraction), 0.0), 1.0)
        if monotonic and fraction < self.fraction:
            return self.bar.format()
        self.fraction = fraction
        self.bar.setValue(round(BAR_MAXIMUM * fraction))
        self.bar.setFormat(text)
        return text

    def busy(self, text: str) -> None:
        """Show a moving bar with ``text`` for work whose length is unknown (a preview)."""
        self.started = time.perf_counter()
        self.bar.setRange(0, 0)
        self.bar.setFormat(text)
        self.bar.setVisible(True)

    def stop(self) -> None:
        """Hide the bar (the job is over)."""
        try:
            self.bar.setRange(0, BAR_MAXIMUM)
            self.bar.setVisible(False)
        except RuntimeError:  # the panel is already gone (viewer closing)
            pass


def tile_fraction(event: Any) -> tuple[float, str]:
    """The fraction done and ``"plane i of n"`` (stacks only) of a ``TileDone`` event."""
    fraction = event.done / event.total if event.total else 0.0
    what = f"plane {event.plane + 1} of {event.n_planes}" if event.n_planes > 1 else ""
    return fraction, what
