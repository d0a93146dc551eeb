"""``swsrs serve --config FILE``: a TOML file as the third source, and ``--print-config``.

The file's keys are the long flags of ``swsrs serve`` in snake_case (``--peer-wait`` →
``peer_wait``), derived from the argument parser, so every flag, present or future, is a
key. Values are what the flag takes: strings (``peer_wait = "2m"``), numbers
(``max_conns = 1000``), ``true``/``false`` for switches (``no_auth``), and for a
comma-separated flag a list of strings as well (``allowed_origins = ["a.example.com"]``).
Precedence: flags > environment (``SWSRS_<KEY>``) > file > defaults. Every problem is a
one-line :class:`~swsrs.errors.ConfigError` naming the file and the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from swsrs.durations import format_duration
from swsrs.errors import ConfigError
from swsrs.server import config as server_config
from swsrs.server.config import ServerConfig

ENV_VAR = "SWSRS_CONFIG"
NOT_KEYS = frozenset({"config", "print_config", "debug", "help"})  # flags, not settings
MASK = "***"
_SECRET_NAMES = ("password", "secret", "token", "credential")
# Keys whose unset value is made up at each start: printed as a comment, never pinned.
_DERIVED = {"node_id": "<hostname>-<random>, new at each start"}


@dataclass(frozen=True, slots=True)
class Key:
    """One config file key: a long flag of ``swsrs serve``."""

    name: str  # peer_wait
    flag: str  # --peer-wait
    kind: str  # switch, list (comma-separated), duration, or value

    @property
    def env(self) -> str:
        return "SWSRS_" + self.name.upper()


def keys_of(parser: argparse.ArgumentParser) -> dict[str, Key]:
    """Every setting of ``parser`` by key, in the order of ``--help``."""
    keys: dict[str, Key] = {}
    for action in parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if not longs or action.dest in NOT_KEYS:
            continue
        name = longs[0][2:].replace("-", "_")
        if isinstance(action, argparse._StoreTrueAction):
            kind = "switch"
        elif "comma-separated" in (action.help or ""):
            kind = "list"
        elif action.metavar == "DUR":
            kind = "duration"
        else:
            kind = "value"
        keys[name] = Key(name, longs[0], kind)
    return keys


def read(path: str, keys: Mapping[str, Key]) -> dict[str, str]:
    """The file's settings as flag values (``"true"``/``"false"`` for switches)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    out: dict[str, str] = {}
    for name, value in data.items():
        key = keys.get(name)
        if key is None:
            near = difflib.get_close_matches(name.replace("-", "_").lower(), list(keys), n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"{path}: unknown key {name!r}{hint}")
        out[name] = _as_flag_value(path, key, value)
    return out


def _as_flag_value(path: str, key: Key, value: Any) -> str:
    if key.kind == "switch":
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: {key.name} must be true or false, got {value!r}")
        return "true" if value else "false"
    if isinstance(value, list) and key.kind == "list":
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: {key.name} must be a list of strings")
        return ",".join(value)
    if isinstance(value, str) or (isinstance(value, int | float) and not isinstance(value, bool)):
        return str(value)
    want = (
        "a string, a number or a list of strings" if key.kind == "list" else "a string or a number"
    )
    raise ConfigError(f"{path}: {key.name} must be {want}, got {type(value).__name__} {value!r}")


def config_path(flags: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    return flags.get("config") or env.get(ENV_VAR) or None


def load(
    flags: Mapping[str, Any], env: Mapping[str, str], keys: Mapping[str, Key]
) -> tuple[ServerConfig, dict[str, str]]:
    """The configuration from flags > environment > ``--config``/``SWSRS_CONFIG`` > defaults,
    and the file's values. A bad value that came from the file is blamed on its key there."""
    path = config_path(flags, env)
    file = read(path, keys) if path else {}
    try:
        return server_config.load(flags, env, file), file
    except ConfigError as exc:
        if path is None:
            raise
        from_file = [k for n, k in keys.items() if _source(k, flags, env, file) == "file"]
        raise ConfigError(_blame(str(exc), path, from_file)) from None


def _source(
    key: Key, flags: Mapping[str, Any], env: Mapping[str, str], file: Mapping[str, str]
) -> str:
    if flags.get(key.name) not in (None, False):
        return "flag"
    if env.get(key.env, "") != "":
        return "env"
    return "file" if file.get(key.name, "") != "" else "default"


def _blame(message: str, path: str, from_file: list[Key]) -> str:
    """``message`` with each file key's flag or variable name replaced by the key, and the
    file named in front, when the message is about a value from the file."""
    out = message
    for key in from_file:
        for name in (key.flag, key.env):
            out = re.sub(rf"(?<![\w-]){re.escape(name)}(?![\w-])", key.name, out)
    return f"{path}: {out}" if out != message else message


# --print-config


def render(
    cfg: ServerConfig,
    keys: Mapping[str, Key],
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    file: Mapping[str, str],
) -> str:
    """The effective configuration as TOML that ``--config`` reads back, secrets masked."""
    lines = [
        "# swsrs serve: the effective configuration (flags > environment > file > defaults).",
        "# Secrets are masked; load it with: swsrs serve --config FILE",
    ]
    for key in keys.values():
        explicit = _source(key, flags, env, file) != "default"
        if key.name in _DERIVED and not explicit:
            lines.append(f"# {key.name}: not set ({_DERIVED[key.name]})")
            continue
        value = _effective(cfg, key)
        if value is _MISSING:  # a setting ServerConfig does not show: as given, if given
            raw = flags.get(key.name)
            raw = str(raw) if raw is not None else env.get(key.env) or file.get(key.name)
            value = raw if raw else None
        if value is None:
            lines.append(f"# {key.name}: not set")
            continue
        lines.append(f"{key.name} = {_toml(_masked(key, value))}")
    return "\n".join(lines) + "\n"


_MISSING: Any = object()


def _effective(cfg: ServerConfig, key: Key) -> Any:
    name = key.name
    if name == "addr":
        return _addr(cfg.host, cfg.port)
    if name == "metrics_addr":
        return None if cfg.metrics_addr is None else _addr(*cfg.metrics_addr)
    if name == "max_conns":
        return cfg.limits.max_conns or "auto"
    for holder in (cfg, cfg.limits):
        if name in {f.name for f in dataclasses.fields(holder)}:
            value = getattr(holder, name)
            break
    else:
        return _MISSING
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, tuple):
        return [str(v) for v in value]
    if key.kind == "duration" and isinstance(value, int | float):
        return format_duration(value)
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, int):
        return value
    return str(value)  # value objects (limits.Rate) print in flag syntax


def _addr(host: str | None, port: int) -> str:
    if host is None:
        return f":{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _masked(key: Key, value: Any) -> Any:
    if any(word in key.name for word in _SECRET_NAMES):
        return MASK
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, list):
        return [mask_url(v) for v in value]
    return value


def mask_url(text: str) -> str:
    """``scheme://user:password@host/…`` with the password masked; anything else as is."""
    try:
        parts = urlsplit(text)
        password = parts.password
    except ValueError:
        return text
    if password is None:
        return text
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{MASK}@{host}"))


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return _quote(str(value))


def _quote(text: str) -> str:
    def esc(m: re.Match[str]) -> str:
        c = m.group(0)
        return {'"': '\\"', "\\": "\\\\"}.get(c) or f"\\u{ord(c):04x}"

    return '"' + re.sub(r'["\\\x00-\x1f\x7f]', esc, text) + '"'
