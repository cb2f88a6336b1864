"""What the command line prints: one-line messages, errors and a terminal progress bar."""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from collections.abc import Iterator
from typing import TextIO

PROG = "napari-unet"


class UsageError(ValueError):
    """A problem with the command line or the input that the user can fix (exit status 2)."""


def say(message: str, stream: TextIO | None = None) -> None:
    """Print ``message`` (standard output by default) and flush."""
    print(message, file=stream or sys.stdout, flush=True)


def error(message: str) -> None:
    """Print ``napari-unet: error: <message>`` on standard error."""
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)


def warning(message: str) -> None:
    """Print ``napari-unet: warning: <message>`` on standard error, on one line."""
    print(f"{PROG}: warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def for_the_user(category: type[Warning], filename: str) -> bool:
    """Whether a warning is the user's business: not a library's deprecation notice about
    another library's API (``torch.jit.load`` is deprecated, raised inside bioimageio.core),
    which the user cannot act on; ``--debug`` shows every warning in Python's own format."""
    deprecation = issubclass(category, (DeprecationWarning, PendingDeprecationWarning))
    return not deprecation or "napari_unet" in str(filename)


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A ``warnings.showwarning`` for the program: the engine's warnings (an estimate it did not
    trust, an ignored option) as one line each, without Python's file and line."""
    if for_the_user(category, filename):
        warning(str(message))


@contextlib.contextmanager
def warnings_about(name: str, bar: ProgressBar | None = None) -> Iterator[None]:
    """Within the block each warning names the input it is about (``napari-unet: warning:
    <name>: ...``), on a line of its own after the progress bar's."""
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if not for_the_user(category, filename):
            return
        if bar is not None:
            bar.close()
        warning(f"{name}: {message}")

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous


def one_line(exc: BaseException) -> str:
    """``exc`` as one sentence for the user, naming the options instead of Python arguments."""
    if isinstance(exc, OSError) and exc.filename and exc.strerror:
        text = f"{exc.strerror.lower()}: {exc.filename}"
    else:
        text = str(exc) or type(exc).__name__
    if isinstance(exc, KeyError):
        text = text.strip("'\"")
    # the engine's hints name Python arguments; name the options instead
    text = text.replace("channel_axis=...", "--channel-axis").replace("stack=True", "--stack")
    return " ".join(text.split())


class ProgressBar:
    """A text progress bar on a terminal, redrawn in place; silent when not on a terminal.

    Parameters
    ----------
    label : text shown before the bar.
    stream : where to draw (standard error by default).
    enabled : force on/off; ``None`` draws only when ``stream`` is a terminal.
    width : characters inside the bar.
    """

    def __init__(
        self,
        label: str,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        width: int = 30,
    ):
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(isatty and isatty()) if enabled is None else enabled
        self.label = label
        self.width = width
        self.start = time.perf_counter()
        self._shown = False

    def update(self, done: int, total: int, unit: str = "tiles") -> None:
        if not self.enabled or total <= 0:
            return
        fraction = min(max(done / total, 0.0), 1.0)
        filled = round(fraction * self.width)
        elapsed = time.perf_counter() - self.start
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(
            f"\r{self.label} [{bar}] {fraction * 100:5.1f}% {done}/{total} {unit} {elapsed:6.1f}s"
        )
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False
