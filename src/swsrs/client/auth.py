"""Client-side auth: relay discovery, the OAuth 2.0 device login, saved tokens, refresh.

The pieces ``swsrs auth`` and ``swsrs create`` are built from, usable on
their own:

- :func:`discover` reads the relay's ``/.well-known/swsrs-config``;
- :func:`device_login` runs the device authorization grant (RFC 8628)
  against the IdP the relay names and hands the user's instructions to a
  ``prompt`` callback (the library never prints or reads a terminal);
- :class:`~swsrs.client.tokens.FileTokenStore` keeps a
  :class:`~swsrs.client.tokens.Token` in a 0600 JSON file (``tokens.py``);
- :class:`RefreshingTokenProvider` is a token provider for
  :class:`~swsrs.client.admin.AdminClient` that refreshes an expired token
  with its refresh token and saves the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ssl as _ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import aiohttp

from swsrs.client.admin import raise_for_status
from swsrs.client.proxy import client_session
from swsrs.client.tokens import (
    FileTokenStore,
    Token,
)
from swsrs.errors import (
    AuthDisabled,
    ConfigError,
    DeviceLoginError,
    LoginDenied,
    LoginExpired,
    LoginRequired,
    RelayUnreachable,
)
from swsrs.urls import to_http_base

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
LOGIN_SCOPES = ("openid", "offline_access")  # an ID and a refresh token, on top of the relay's
_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=30)


def _ssl_arg(ssl: _ssl.SSLContext | bool | None) -> _ssl.SSLContext | bool:
    return ssl if ssl is not None else True


async def discover(
    relay_url: str, *, ssl: _ssl.SSLContext | bool | None = None, proxy: str | None = None
) -> dict[str, Any]:
    """The relay's ``/.well-known/swsrs-config``; raises :class:`AuthDisabled` on its 404.

    ``proxy`` here and below: an HTTP proxy URL, ``""`` for none, ``None`` for the
    environment's (:mod:`swsrs.client.proxy`)."""
    url = to_http_base(relay_url) + "/.well-known/swsrs-config"
    try:
        async with (
            client_session(proxy, timeout=_HTTP_TIMEOUT) as http,
            http.get(url, ssl=_ssl_arg(ssl)) as resp,
        ):
            if resp.status == 404:
                raise AuthDisabled("the relay runs without admin auth (--no-auth)")
            await raise_for_status(resp)
            doc: dict[str, Any] = await resp.json()
            return doc
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise RelayUnreachable(f"cannot reach the relay at {relay_url}: {exc}") from None


# -- tokens and where they live --------------------------------------------------


# -- talking to the IdP ------------------------------------------------------------


async def _post_form(
    http: aiohttp.ClientSession,
    url: str,
    form: dict[str, str],
    ssl: _ssl.SSLContext | bool | None,
) -> tuple[int, dict[str, Any]]:
    """POST a form to the IdP; the status and the JSON body (``{}`` if there is none)."""
    try:
        async with http.post(
            url, data=form, headers={"Accept": "application/json"}, ssl=_ssl_arg(ssl)
        ) as resp:
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = None
            return resp.status, body if isinstance(body, dict) else {}
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise DeviceLoginError(
            f"cannot reach the identity provider at {url}: {str(exc) or type(exc).__name__}"
        ) from None


def _idp_error(body: dict[str, Any], status: int) -> str:
    err = str(body.get("error") or f"HTTP {status}")
    desc = body.get("error_description")
    return f"{err}: {desc}" if desc else err


@dataclass(frozen=True, slots=True)
class DeviceAuthorization:
    """What the user must do: open ``verification_uri`` and enter ``user_code``
    (or open ``verification_uri_complete``, which carries the code)."""

    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float


Prompt = Callable[[DeviceAuthorization], "Awaitable[None] | None"]


async def device_login(
    relay_url: str | None = None,
    *,
    prompt: Prompt,
    client_id: str | None = None,
    scopes: Sequence[str] | None = None,
    config: dict[str, Any] | None = None,
    ssl: _ssl.SSLContext | bool | None = None,
    proxy: str | None = None,
) -> Token:
    """Log in with the OAuth 2.0 device authorization grant (RFC 8628).

    The IdP, its endpoints and the scopes come from the relay's discovery
    (``config``, or fetched from ``relay_url``); ``openid offline_access`` is
    added so the IdP issues a refresh token. ``prompt`` is called once with
    the user's instructions; the call then polls the token endpoint until
    the user approves (``authorization_pending`` waits, ``slow_down`` adds
    5 s to the interval) and returns the token. Raises :class:`LoginDenied`
    on ``access_denied``, :class:`LoginExpired` on ``expired_token``, and
    :class:`DeviceLoginError` on any other refusal.
    """
    if config is None:
        if relay_url is None:
            raise ConfigError("device_login needs relay_url or config")
        config = await discover(relay_url, ssl=ssl, proxy=proxy)
    client = client_id or config.get("client_id_hint") or ""
    if not client:
        raise ConfigError("the relay names no client id (client_id_hint); pass --client-id")
    device_ep = config.get("device_authorization_endpoint") or ""
    token_ep = config.get("token_endpoint") or ""
    if not device_ep or not token_ep:
        raise DeviceLoginError(
            "the relay's identity provider offers no device authorization endpoint"
        )
    wanted = list(scopes if scopes is not None else config.get("scopes") or [])
    scope = " ".join(dict.fromkeys([*LOGIN_SCOPES, *wanted]))

    async with client_session(proxy, timeout=_HTTP_TIMEOUT) as http:
        request = {"client_id": client, "scope": scope}
        if config.get("audience"):
            # Auth0 issues a JWT for an API only when asked for its audience; others ignore it.
            request["audience"] = str(config["audience"])
        status, body = await _post_form(http, device_ep, request, ssl)
        if status != 200 or "device_code" not in body:
            raise DeviceLoginError(
                f"device authorization refused: {_idp_error(body, status)}",
                str(body.get("error", "")),
            )
        auth = DeviceAuthorization(
            user_code=str(body.get("user_code", "")),
            verification_uri=str(body.get("verification_uri") or body.get("verification_url")),
            verification_uri_complete=body.get("verification_uri_complete"),
            expires_in=float(body.get("expires_in") or 600),
            interval=float(body.get("interval") or 5),  # RFC 8628: 5 s when absent
        )
        shown = prompt(auth)
        if inspect.isawaitable(shown):
            await shown

        form = {"grant_type": DEVICE_GRANT, "device_code": str(body["device_code"]),
                "client_id": client}  # fmt: skip
        interval = auth.interval
        # The IdP says when the code has expired; this is only a backstop.
        deadline = time.monotonic() + auth.expires_in + 4 * interval + 10
        while True:
            await asyncio.sleep(interval)
            status, body = await _post_form(http, token_ep, form, ssl)
            if status == 200:
                return Token.from_response(body, token_endpoint=token_ep, client_id=client)
            error = str(body.get("error", ""))
            if error == "authorization_pending":
                pass
            elif error == "slow_down":
                interval += 5
            elif error == "access_denied":
                raise LoginDenied("the login was denied at the identity provider", error)
            elif error == "expired_token":
                raise LoginExpired(
                    "the code expired before the login was approved; start again", error
                )
            else:
                raise DeviceLoginError(
                    f"the identity provider refused the login: {_idp_error(body, status)}", error
                )
            if time.monotonic() > deadline:
                raise LoginExpired("the login was not approved in time; start again")


async def refresh(
    token: Token, *, ssl: _ssl.SSLContext | bool | None = None, proxy: str | None = None
) -> Token:
    """A new access token from ``token``'s refresh token (RFC 6749 section 6).

    Raises :class:`LoginRequired` when that is impossible (no refresh token,
    or the IdP refuses it): only a new ``swsrs auth`` helps then.
    """
    if not token.refresh_token or not token.token_endpoint or not token.client_id:
        raise LoginRequired("the saved token has expired and cannot be refreshed")
    form = {"grant_type": "refresh_token", "refresh_token": token.refresh_token,
            "client_id": token.client_id}  # fmt: skip
    async with client_session(proxy, timeout=_HTTP_TIMEOUT) as http:
        try:
            status, body = await _post_form(http, token.token_endpoint, form, ssl)
        except DeviceLoginError as exc:
            raise LoginRequired(f"the saved token has expired and {exc}") from None
    if status != 200:
        raise LoginRequired(
            f"the identity provider refused the refresh ({_idp_error(body, status)})"
        )
    return Token.from_response(
        body,
        token_endpoint=token.token_endpoint,
        client_id=token.client_id,
        previous_refresh=token.refresh_token,
    )


class RefreshingTokenProvider:
    """A token provider for :class:`~swsrs.client.admin.AdminClient`, backed by a store.

    Each call returns the saved access token; when it has expired it is
    refreshed first and the new token saved back. A token file without the
    IdP's token endpoint or client id (as the reference client writes it)
    is completed from the relay's discovery when ``relay_url`` is given.
    Raises :class:`LoginRequired` when no token can be had: it never prompts.
    """

    def __init__(
        self,
        store: FileTokenStore | None = None,
        *,
        relay_url: str | None = None,
        ssl: _ssl.SSLContext | bool | None = None,
        proxy: str | None = None,
    ) -> None:
        self.store = store or FileTokenStore()
        self._proxy = proxy
        self.relay_url = relay_url
        self._ssl = ssl
        self._lock = asyncio.Lock()

    async def __call__(self) -> str:
        async with self._lock:
            token = self.store.load()
            if token is None:
                raise LoginRequired(f"no saved credentials in {self.store.path}")
            if not token.expired():
                return token.access_token
            if (not token.token_endpoint or not token.client_id) and self.relay_url:
                with contextlib.suppress(AuthDisabled, RelayUnreachable):
                    config = await discover(self.relay_url, ssl=self._ssl, proxy=self._proxy)
                    token = replace(
                        token,
                        token_endpoint=token.token_endpoint or config.get("token_endpoint"),
                        client_id=token.client_id or config.get("client_id_hint"),
                    )
            token = await refresh(token, ssl=self._ssl, proxy=self._proxy)
            self.store.save(token)
            return token.access_token
