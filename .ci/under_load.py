"""Run a command while background processes keep CPU cores busy, then stop them.

Races between a worker thread and the Qt event loop (a progress bar closed while an update is
handled, a cancel that arrives late) hide on an idle machine. tox's test env runs the
timing-sensitive tests (``pytest -m timing``) a second time through this script, so that they
also pass when the GUI thread has to share the CPU, as on a busy laptop.

Usage: ``python .ci/under_load.py [--burners N] -- COMMAND ...``; the exit status is the
command's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

BURN = "while True: pass"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burners", type=int, default=2, help="CPU-burning processes (2)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(args.burners)]
    try:
        return subprocess.call(command)
    finally:
        for proc in burners:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
