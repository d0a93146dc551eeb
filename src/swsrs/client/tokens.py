"""Saved admin tokens: :class:`Token` and :class:`FileTokenStore`, a 0600 JSON file with the
same keys as the reference client (``access_token``, ``token_type``, ``refresh_token``,
``expiry``)."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import platformdirs

from swsrs.client.admin import parse_time
from swsrs.errors import DeviceLoginError

EXPIRY_SKEW = 30.0  # a token this close to its expiry counts as expired


def default_credentials_path() -> Path:
    """``<user config dir>/swsrs/credentials.json``."""
    return Path(platformdirs.user_config_dir("swsrs")) / "credentials.json"


def _rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Token:
    """An OAuth 2.0 token as saved in the credentials file.

    ``token_endpoint`` and ``client_id`` are kept next to the reference's four
    keys so a refresh needs no discovery round trip; a file without them is
    still read (the provider then asks the relay's discovery).
    """

    access_token: str
    token_type: str = "Bearer"
    refresh_token: str | None = None
    expiry: datetime | None = None
    token_endpoint: str | None = None
    client_id: str | None = None

    def expired(self, skew: float = EXPIRY_SKEW) -> bool:
        if self.expiry is None:
            return False
        return datetime.now(UTC) + timedelta(seconds=skew) >= self.expiry

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"access_token": self.access_token, "token_type": self.token_type}
        if self.refresh_token:
            d["refresh_token"] = self.refresh_token
        if self.expiry is not None:
            d["expiry"] = _rfc3339(self.expiry)
        if self.token_endpoint:
            d["token_endpoint"] = self.token_endpoint
        if self.client_id:
            d["client_id"] = self.client_id
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Token:
        access = d.get("access_token")
        if not isinstance(access, str) or not access:
            raise ValueError("no access_token")
        expiry = None
        if isinstance(d.get("expiry"), str) and d["expiry"]:
            expiry = parse_time(d["expiry"])
            if expiry.year <= 1:  # Go's zero time: no expiry
                expiry = None

        def opt(key: str) -> str | None:
            v = d.get(key)
            return v if isinstance(v, str) and v else None

        return cls(
            access_token=access,
            token_type=opt("token_type") or "Bearer",
            refresh_token=opt("refresh_token"),
            expiry=expiry,
            token_endpoint=opt("token_endpoint"),
            client_id=opt("client_id"),
        )

    @classmethod
    def from_response(
        cls,
        body: dict[str, Any],
        *,
        token_endpoint: str,
        client_id: str,
        previous_refresh: str | None = None,
    ) -> Token:
        """A token endpoint's answer (RFC 6749 section 5.1) as a :class:`Token`."""
        access = body.get("access_token")
        if not isinstance(access, str) or not access:
            raise DeviceLoginError("the identity provider answered without an access_token")
        expiry = None
        expires_in = body.get("expires_in")
        if isinstance(expires_in, int | float) and expires_in > 0:
            expiry = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=expires_in)
        refresh = body.get("refresh_token")
        return cls(
            access_token=access,
            token_type=str(body.get("token_type") or "Bearer"),
            refresh_token=refresh if isinstance(refresh, str) and refresh else previous_refresh,
            expiry=expiry,
            token_endpoint=token_endpoint,
            client_id=client_id,
        )


class FileTokenStore:
    """A :class:`Token` in a JSON file, mode 0600, replaced atomically on every save."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_credentials_path()

    def load(self) -> Token | None:
        """The saved token, or ``None`` when there is none (or it is unreadable)."""
        try:
            data = json.loads(self.path.read_text())
            return Token.from_json(data) if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None

    def save(self, token: Token) -> None:
        """Write to a temporary file beside the target, fsync, then rename over it."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".credentials-", suffix=".tmp")
        try:
            if hasattr(os, "fchmod"):  # POSIX; mkstemp already uses 0600, say it anyway
                os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(token.to_json(), f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with contextlib.suppress(OSError):  # make the rename itself durable
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def delete(self) -> bool:
        """Forget the saved token; ``False`` if there was none."""
        try:
            self.path.unlink()
            return True
        except FileNotFoundError:
            return False


def load_cached_token(path: str | Path | None = None) -> str | None:
    """The ``access_token`` of a saved credentials file, or ``None`` if there is none."""
    token = FileTokenStore(path).load()
    return token.access_token if token else None
