"""``swsrs``: one program, one subcommand per job. Exit 0 ok, 1 failure, 2 usage."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from swsrs import _version
from swsrs.cli import admin, auth, peer, serve
from swsrs.errors import ConfigError, SwsrsError


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``swsrs serve: argument --addr: … (see --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _version_cmd(args: argparse.Namespace) -> int:
    info = _version.build_info()
    print(f"swsrs {info['version']} (commit {info['commit']}, built {info['date']})")
    return 0


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
    parser = build_parser()
    args = parser.parse_args(_glue_opaque_values(sys.argv[1:] if argv is None else argv))
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"swsrs {args.command}: {exc}", file=sys.stderr)
        return 2
    except SwsrsError as exc:
        print(f"swsrs {args.command}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"swsrs {args.command}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def main() -> None:
    sys.exit(run())
