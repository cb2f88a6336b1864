"""The ``napari-unet`` program: the parser of its commands, and exit statuses for outcomes."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from napari_unet.cli import evaluate, export, predict, sample, train
from napari_unet.cli.output import PROG, UsageError, error, one_line, show_warning


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line (no usage dump) and raises instead of exiting."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``napari-unet``."""
    from napari_unet.engine._version import __version__

    parser = _Parser(
        prog=PROG,
        description="Segment cells with a U-Net, train one, and score segmentations, without a screen.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    common.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in (predict, train, evaluate, sample, export):
        name = command.__name__.rsplit(".", 1)[-1]
        # the module's docstring, without its "``napari-unet <name>``: ", describes the command
        about = " ".join(command.__doc__.split(": ", 1)[1].split())
        about = about[0].upper() + about[1:]
        p = sub.add_parser(name, parents=[common], help=command.HELP, description=about)
        command.add_arguments(p)
        p.set_defaults(func=command.run)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: raised like Ctrl-C, so that every ``finally`` and ``except
    BaseException`` runs and removes the temporary files of a write in progress."""


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Terminated` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum: int, frame: Any) -> None:
        raise Terminated("terminated")

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _one_line_warnings(debug: bool) -> Iterator[None]:
    """Within the block warnings print as ``napari-unet: warning: ...`` lines (Python's own
    format, with file and line, under ``--debug``)."""
    if debug:
        yield
        return
    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        yield


def _expected_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [
        UsageError, ValueError, TypeError, FileNotFoundError, FileExistsError,
        IsADirectoryError, NotADirectoryError, PermissionError,
    ]
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``napari-unet`` with ``argv`` (default: the process's arguments).

    Returns
    -------
    int
        The exit status: 0 success, 1 a failure while working, 2 bad usage or input (nothing
        written), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        error(one_line(exc))
        return 2
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with _sigterm_interrupts(), _one_line_warnings(debug):
            return int(args.func(args) or 0)
    except Terminated:
        error("terminated")
        return 143
    except BrokenPipeError:  # e.g. `napari-unet evaluate ... | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:  # pragma: no cover
            pass
        return 1
    except KeyboardInterrupt as exc:
        if debug:
            traceback.print_exc()
        error(one_line(exc) if str(exc) else "interrupted")
        return 130
    except _expected_errors() as exc:
        if debug:
            traceback.print_exc()
        error(one_line(exc))
        return 2
    except Exception as exc:
        if debug:
            traceback.print_exc()
        error(one_line(exc))
        return 1
