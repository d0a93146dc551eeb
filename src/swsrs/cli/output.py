"""What the CLI shows the user when things go wrong: one line, or with ``--debug`` the traceback.

``--debug`` (or ``SWSRS_DEBUG=1``) is the only way a Python traceback reaches the
terminal; without it every failure is one line ``swsrs <command>: <message>``.
Commands may ask :func:`debug_enabled` to say more.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import threading
import traceback
from typing import NoReturn

# A process killed by SIGPIPE is reported by the shell as 128 + 13.
SIGPIPE_STATUS = 141

_debug = False


def set_debug(on: bool) -> None:
    """Record the ``--debug`` flag (``SWSRS_DEBUG`` is read by :func:`debug_enabled`)."""
    global _debug
    _debug = on


def debug_enabled() -> bool:
    """``--debug`` was given or ``SWSRS_DEBUG`` is set to a true value (1, true, yes, on)."""
    env = os.environ.get("SWSRS_DEBUG", "").strip().lower()
    return _debug or env in {"1", "true", "yes", "on"}


def error_line(prog: str, message: str) -> None:
    """``<prog>: <message>`` on stderr, after the traceback being handled when debugging."""
    if debug_enabled() and sys.exc_info()[0] is not None:
        traceback.print_exc()
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    with contextlib.suppress(OSError, ValueError):  # stderr closed too: nothing to tell
        print(f"{prog}: {first}", file=sys.stderr, flush=True)


def describe(exc: BaseException) -> str:
    """A one-line message for an exception nobody expected."""
    return f"unexpected error: {type(exc).__name__}: {exc} (--debug shows the traceback)"


def stdout_closed() -> bool:
    """Whether stdout is a pipe (or socket) whose reader has gone, as after ``| head -1``."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no stdout, or no poll on this platform
        return False


def die_of_sigpipe() -> NoReturn:
    """End the way ``git`` and ``ls`` do when their reader goes away: killed by SIGPIPE.

    Python ignores SIGPIPE and raises ``BrokenPipeError`` instead; the usual Unix
    tool never sees the error, the default action kills it silently and the
    shell reports status 141 (and says nothing: bash does not report SIGPIPE
    deaths). git's ``check_pipe()`` does exactly this: restore the default
    action and raise the signal. Where there is no SIGPIPE, exit 141 quietly.
    """
    with contextlib.suppress(OSError, ValueError):  # nothing may be flushed at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    sigpipe = getattr(signal, "SIGPIPE", None)
    if sigpipe is not None:
        signal.signal(sigpipe, signal.SIG_DFL)
        os.kill(os.getpid(), sigpipe)
    os._exit(SIGPIPE_STATUS)


class _OneLineFormatter(logging.Formatter):
    def __init__(self, prog: str) -> None:
        super().__init__()
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        lines = record.getMessage().strip().splitlines()
        message = lines[0] if lines else record.levelname.lower()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            message += f": {type(exc).__name__}: {exc}"
        return f"{self.prog}: {message}"


def hide_stray_tracebacks(prog: str) -> None:
    """Tracebacks that do not pass through the command's own error handling (a
    thread that dies, an asyncio task whose failure nobody read, "Exception
    ignored in …") become one line too, unless debugging.

    A command that sets up logging of its own (``serve``) replaces the handler
    installed here.
    """
    if debug_enabled():
        return

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is not SystemExit and args.exc_value is not None:
            error_line(prog, describe(args.exc_value))

    def unraisable_hook(args: sys.UnraisableHookArgs) -> None:
        return  # "Exception ignored in …": noise for a user, shown with --debug

    threading.excepthook = thread_hook
    sys.unraisablehook = unraisable_hook
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_OneLineFormatter(prog))
        handler.setLevel(logging.WARNING)
        root.addHandler(handler)
