"""Client-side auth helpers: relay discovery and the cached credentials file.

The device login (``swsrs auth``) and refresh come with OIDC support; this
module already owns where credentials live and what discovery says.
"""

from __future__ import annotations

import json
import ssl as _ssl
from pathlib import Path
from typing import Any

import aiohttp
import platformdirs

from swsrs.client.admin import raise_for_status
from swsrs.errors import AuthDisabled, RelayUnreachable
from swsrs.urls import to_http_base


def default_credentials_path() -> Path:
    """``<user config dir>/swsrs/credentials.json``."""
    return Path(platformdirs.user_config_dir("swsrs")) / "credentials.json"


async def discover(relay_url: str, *, ssl: _ssl.SSLContext | bool | None = None) -> dict[str, Any]:
    """The relay's ``/.well-known/swsrs-config``; raises :class:`AuthDisabled` on its 404."""
    url = to_http_base(relay_url) + "/.well-known/swsrs-config"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
            http.get(url, ssl=ssl if ssl is not None else True) as resp,
        ):
            if resp.status == 404:
                raise AuthDisabled("the relay runs without admin auth (--no-auth)")
            await raise_for_status(resp)
            doc: dict[str, Any] = await resp.json()
            return doc
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise RelayUnreachable(f"cannot reach the relay at {relay_url}: {exc}") from None


def load_cached_token(path: str | Path | None = None) -> str | None:
    """The ``access_token`` of a saved credentials file, or ``None`` if there is none."""
    p = Path(path) if path else default_credentials_path()
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    token = data.get("access_token") if isinstance(data, dict) else None
    return token if isinstance(token, str) and token else None
