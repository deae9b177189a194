"""The ``bpfmem`` program's first and last instructions: signals are answered from start to exit.

Importing the command line takes a few hundred milliseconds, and a normal interpreter exit resets
signal handling before the process is gone; a SIGINT, SIGTERM or SIGHUP in either window would
kill the process with no word.  Until ``cli.main`` installs its own handlers (which clean up what a
run made), and after it has returned (everything it made is gone), these say so in one line and
exit with 128 + the signal.  At the end the signals are blocked and the process exits at once.
"""

from __future__ import annotations

import os
import signal
import sys

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _stopped(signum: int, frame: object) -> None:
    os.write(2, f"bpfmem: stopped by {signal.Signals(signum).name}\n".encode())
    os._exit(128 + signum)


def entry() -> None:
    for s in SIGNALS:
        signal.signal(s, _stopped)
    from .cli import main
    code = main()
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)     # done: a late signal changes nothing any more
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
