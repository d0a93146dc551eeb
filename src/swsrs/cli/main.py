"""``swsrs``: one program, one subcommand per job. Exit 0 ok, 1 failure, 2 usage."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from typing import NoReturn

from swsrs import _version
from swsrs.cli import admin, auth, output, peer, serve
from swsrs.cli.output import debug_enabled
from swsrs.errors import ConfigError, SwsrsError

__all__ = ["build_parser", "debug_enabled", "main", "run"]


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``swsrs serve: argument --addr: … (see --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _version_cmd(args: argparse.Namespace) -> int:
    info = _version.build_info()
    print(f"swsrs {info['version']} (commit {info['commit']}, built {info['date']})")
    return 0


def _parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every subcommand parser below it."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share a parser
                yield from _parsers(sub)


def _leaf(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the subcommand ``args`` selected (``swsrs sessions list``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                return _leaf(chosen, args)
    return parser


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="swsrs",
        description="Simple WebSocket Relay Service: pair two outbound WebSocket peers "
        "by session and pump bytes between them.",
    )
    p.add_argument("--version", action="version", version=f"swsrs {_version.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve.register(sub)
    auth.register(sub)
    admin.register(sub)
    peer.register(sub)
    v = sub.add_parser("version", help="print version, commit and build date",
                       description="Print version, commit and build date.")  # fmt: skip
    v.set_defaults(func=_version_cmd)
    # --debug before or after the subcommand's name. Below the top the default is
    # SUPPRESS: a subcommand's own default would overwrite `swsrs --debug CMD`'s True.
    for parser in _parsers(p):
        parser.add_argument(
            "--debug",
            action="store_true",
            default=False if parser is p else argparse.SUPPRESS,
            help="show Python tracebacks of failures (SWSRS_DEBUG=1)",
        )
    return p


# Flags whose values are random base64url, which may start with "-": argparse would take
# such a value for an option, so it is glued to its flag (Go's flag package, which the
# reference CLI uses, always takes the next word as the value).
_OPAQUE_VALUE_FLAGS = frozenset({"--session", "--token", "--oidc-token"})


def _glue_opaque_values(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "--":
            out.append(arg)
            out.extend(it)
        elif arg in _OPAQUE_VALUE_FLAGS and (value := next(it, None)) is not None:
            out.append(f"{arg}={value}")
        else:
            out.append(arg)
    return out


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand; the exit status.

    Every failure is one line ``swsrs <command>: <message>`` on stderr (with the
    traceback before it under ``--debug``); :data:`output.SIGPIPE_STATUS` means
    stdout's reader went away (``main`` then dies of SIGPIPE).
    """
    parser = build_parser()
    args, extra = parser.parse_known_args(
        _glue_opaque_values(sys.argv[1:] if argv is None else argv)
    )
    leaf = _leaf(parser, args)
    if extra:  # argparse reports these from the top parser, naming `swsrs` alone
        leaf.error(f"unrecognized arguments: {' '.join(extra)}")
    output.set_debug(bool(getattr(args, "debug", False)))
    prog = leaf.prog
    output.hide_stray_tracebacks(prog)
    try:
        status = int(args.func(args))
        sys.stdout.flush()  # a closed stdout shows up here, not in Python's exit
        return status
    except ConfigError as exc:
        output.error_line(prog, str(exc))
        return 2
    except SwsrsError as exc:
        output.error_line(prog, str(exc))
        return 1
    except BrokenPipeError as exc:
        if output.stdout_closed():
            return output.SIGPIPE_STATUS
        output.error_line(prog, _os_message(exc))
        return 1
    except OSError as exc:
        output.error_line(prog, _os_message(exc))
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        output.error_line(prog, output.describe(exc))
        return 1


def _os_message(exc: OSError) -> str:
    if exc.strerror and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    return exc.strerror or str(exc)


def main() -> None:
    try:
        status = run()
    except KeyboardInterrupt:  # before the subcommand started (or during its error report)
        status = 130
    if status == output.SIGPIPE_STATUS:
        output.die_of_sigpipe()
    sys.exit(status)
