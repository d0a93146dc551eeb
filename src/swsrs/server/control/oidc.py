"""OIDC bearer verification for the admin API.

The relay fetches the issuer's discovery document and key set (JWKS) once
at start and keeps them; tokens are verified locally with PyJWT. The IdP is
asked again only in the background (a periodic refresh), when a token names
a key id the relay has not seen (key rotation; at most once per
``kid_refetch_interval``), or until the first load succeeds. The data plane
never comes here, so an IdP outage can refuse admin calls (``503``) but
never touches a live tunnel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
from aiohttp import web

from swsrs.server import metrics
from swsrs.server.control.admin import CLAIMS, SCOPE_CREATE, SCOPE_DELETE, SCOPE_READ

log = logging.getLogger("swsrs.oidc")

# Asymmetric only: "none" and HMAC (HS*) are refused whatever the key set holds,
# so a public key can never be abused as an HMAC secret.
ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
    "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip
LEEWAY = 30.0  # seconds of clock skew allowed on exp/nbf/iat
SCOPES = [SCOPE_CREATE, SCOPE_READ, SCOPE_DELETE]
REALM = "swsrs"

# What the IdP's key types can sign with; a token whose alg does not fit its key is refused.
_KTY_ALGS = {
    "RSA": {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"},
    "EC": {"ES256", "ES384", "ES512"},
    "OKP": {"EdDSA"},
}


class TokenRejected(Exception):
    """Why a bearer token is refused (internal; becomes a 401)."""


@dataclass(frozen=True, slots=True)
class _Key:
    kty: str
    alg: str | None  # the JWK's own "alg", when it names one
    public: Any  # a cryptography public key

    def fits(self, alg: str) -> bool:
        return alg in _KTY_ALGS.get(self.kty, set()) and self.alg in (None, alg)


@dataclass(frozen=True, slots=True)
class _Keys:
    by_kid: dict[str, _Key]
    unnamed: list[_Key]  # keys without a kid, tried when a token names none


def _parse_jwks(doc: Any) -> _Keys:
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError("JWKS has no keys array")
    by_kid: dict[str, _Key] = {}
    unnamed: list[_Key] = []
    for raw in doc["keys"]:
        if not isinstance(raw, dict) or raw.get("use", "sig") != "sig":
            continue
        if raw.get("kty") not in _KTY_ALGS:  # "oct" (HMAC) keys are never used
            continue
        try:
            material = jwt.PyJWK.from_dict(raw).key
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue  # a key this build cannot use; the others still count
        # An IdP that publishes private parameters by mistake: verify with the public half.
        if hasattr(material, "public_key"):
            material = material.public_key()
        alg = raw.get("alg")
        key = _Key(str(raw["kty"]), alg if isinstance(alg, str) else None, material)
        if isinstance(raw.get("kid"), str):
            by_kid[raw["kid"]] = key
        else:
            unnamed.append(key)
    if not by_kid and not unnamed:
        raise ValueError("JWKS has no usable signing keys")
    return _Keys(by_kid, unnamed)


def _scopes(claims: dict[str, Any]) -> set[str]:
    """``scope`` (space-separated string) or ``scp`` (array, or a string as some IdPs send)."""
    found: set[str] = set()
    for name in ("scope", "scp"):
        v = claims.get(name)
        if isinstance(v, str):
            found.update(v.split())
        elif isinstance(v, list):
            found.update(s for s in v if isinstance(s, str))
    return found


def _describe(exc: jwt.PyJWTError) -> str:
    """A short reason that never repeats the token."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "token expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "token not valid yet (nbf/iat in the future)"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "token from the wrong issuer"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "token for the wrong audience"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "bad token signature"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token lacks the {exc.claim} claim"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "token algorithm not allowed"
    return "malformed token"


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class OIDCAuthorizer:
    """The :class:`~swsrs.server.control.admin.Authorizer` for production: OIDC JWTs."""

    def __init__(
        self,
        issuer: str,
        *,
        audience: str | None = None,
        client_id: str | None = None,
        kid_refetch_interval: float = 30.0,
        refresh_interval: float = 3600.0,
        retry_max: float = 30.0,
        http_timeout: float = 10.0,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.client_id = client_id
        self.kid_refetch_interval = kid_refetch_interval
        self.refresh_interval = refresh_interval
        self.retry_max = retry_max
        self._timeout = aiohttp.ClientTimeout(total=http_timeout)
        self._http: aiohttp.ClientSession | None = None
        self._provider: dict[str, Any] | None = None  # the IdP's discovery document
        self._keys: _Keys | None = None
        self._last_error = "not fetched yet"
        self._last_kid_refetch = float("-inf")
        self._refetch: asyncio.Task[None] | None = None
        self._background: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Try the IdP once; whatever happens, keep it fresh in the background."""
        self._http = aiohttp.ClientSession(timeout=self._timeout)
        if self.audience is None:
            log.warning(
                "no --oidc-audience: any token of %s with the scopes is accepted, "
                "including tokens meant for other APIs",
                self.issuer,
            )
        try:
            await self._load()
            metrics.jwks_refresh("start", True)
            log.info("OIDC issuer %s loaded (%d signing keys)", self.issuer, self._key_count())
        except Exception as exc:
            metrics.jwks_refresh("start", False)
            self._last_error = str(exc)
            log.warning(
                "OIDC discovery failed at start: %s; admin API answers 503 until it succeeds "
                "(the data plane is not affected)",
                exc,
            )
        self._background = asyncio.get_running_loop().create_task(self._keep_fresh())

    async def stop(self) -> None:
        for task in (self._background, self._refetch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._http is not None:
            await self._http.close()
            self._http = None

    @property
    def ready(self) -> bool:
        return self._provider is not None and self._keys is not None

    def _key_count(self) -> int:
        return len(self._keys.by_kid) + len(self._keys.unnamed) if self._keys else 0

    async def _get_json(self, url: str) -> Any:
        assert self._http is not None, "OIDCAuthorizer.start() was not called"
        try:
            async with self._http.get(url, headers={"Accept": "application/json"}) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"{url} answered HTTP {resp.status}")
                return await resp.json(content_type=None)
        except aiohttp.ClientConnectorError as exc:
            raise RuntimeError(f"cannot reach {url}: {exc.os_error.strerror or exc}") from None
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise RuntimeError(f"{url}: {str(exc) or type(exc).__name__}") from None

    async def _load(self) -> None:
        """Fetch discovery, then the key set; swap both in only when both are good."""
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        doc = await self._get_json(url)
        if not isinstance(doc, dict):
            raise RuntimeError(f"{url} is not a JSON object")
        if str(doc.get("issuer", "")).rstrip("/") != self.issuer.rstrip("/"):
            raise RuntimeError(
                f"discovery names issuer {doc.get('issuer')!r}, expected {self.issuer!r}"
            )
        jwks_uri = doc.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise RuntimeError(f"{url} has no jwks_uri")
        keys = await self._fetch_keys(jwks_uri)
        self._provider = doc
        self._keys = keys

    async def _fetch_keys(self, jwks_uri: str) -> _Keys:
        try:
            return _parse_jwks(await self._get_json(jwks_uri))
        except ValueError as exc:
            raise RuntimeError(f"{jwks_uri}: {exc}") from None

    async def _keep_fresh(self) -> None:
        """Retry until loaded (backing off to ``retry_max``), then refresh now and then."""
        delay = 1.0
        while True:
            if self.ready:
                await asyncio.sleep(self.refresh_interval)
            else:
                await asyncio.sleep(delay)
            try:
                was_ready = self.ready
                await self._load()
                metrics.jwks_refresh("periodic" if was_ready else "retry", True)
                if not was_ready:
                    log.info("OIDC issuer %s loaded; admin API available", self.issuer)
                delay = 1.0
            except Exception as exc:
                metrics.jwks_refresh("periodic" if self.ready else "retry", False)
                self._last_error = str(exc)
                delay = min(delay * 2, self.retry_max)
                if self.ready:
                    log.warning("OIDC refresh failed: %s; keeping the keys we have", exc)
                else:
                    log.warning("OIDC discovery still failing: %s; retrying in %.0fs", exc, delay)

    async def _refetch_keys(self) -> None:
        assert self._provider is not None
        try:
            self._keys = await self._fetch_keys(str(self._provider["jwks_uri"]))
            metrics.jwks_refresh("unknown_kid", True)
            log.info("JWKS refetched for an unknown key id (%d keys)", self._key_count())
        except Exception as exc:
            metrics.jwks_refresh("unknown_kid", False)
            log.warning("JWKS refetch failed: %s", exc)

    async def _keys_for(self, kid: str | None, alg: str) -> list[_Key]:
        assert self._keys is not None
        if kid is None:
            candidates = list(self._keys.unnamed) or list(self._keys.by_kid.values())
            return [k for k in candidates if k.fits(alg)]
        if kid not in self._keys.by_kid:
            # Key rotation: ask the IdP again, but at most once per interval, so
            # tokens with made-up kids cannot make the relay hammer the IdP.
            # Concurrent requests share one fetch.
            now = time.monotonic()
            if self._refetch is None or self._refetch.done():
                if now - self._last_kid_refetch < self.kid_refetch_interval:
                    raise TokenRejected("unknown signing key")
                self._last_kid_refetch = now
                self._refetch = asyncio.get_running_loop().create_task(self._refetch_keys())
            await asyncio.shield(self._refetch)
        key = self._keys.by_kid.get(kid)
        if key is None:
            raise TokenRejected("unknown signing key")
        return [key]

    # -- the Authorizer protocol -------------------------------------------

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims if it is valid for this relay; raises :class:`TokenRejected`."""
        if not token.isascii():  # a JWT is ASCII; a str with surrogates cannot even be encoded
            raise TokenRejected("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("malformed token") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise TokenRejected("token algorithm not allowed (asymmetric signatures only)")
        kid = header.get("kid")
        keys = await self._keys_for(kid if isinstance(kid, str) else None, str(alg))
        keys = [k for k in keys if k.fits(str(alg))]
        if not keys:
            raise TokenRejected("no signing key of the issuer fits the token's algorithm")
        assert self._provider is not None
        reason = "bad token signature"
        for key in keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key.public,
                    algorithms=[str(alg)],
                    issuer=str(self._provider["issuer"]),
                    audience=self.audience,
                    leeway=LEEWAY,
                    options={
                        "require": ["exp", "iss"],
                        "verify_aud": self.audience is not None,
                    },
                )
                return claims
            except jwt.PyJWTError as exc:
                reason = _describe(exc)
                if not isinstance(exc, jwt.InvalidSignatureError):
                    break
            except (ValueError, TypeError):
                reason = "malformed token"
                break
        raise TokenRejected(reason)

    async def authorize(self, request: web.Request, scope: str) -> web.Response | None:
        if not self.ready:
            metrics.oidc_verification("unavailable")
            return self._unavailable()
        token = _bearer(request)
        if token is None:
            metrics.oidc_verification("missing")
            return web.Response(
                status=401,
                text="missing bearer token (Authorization: Bearer <JWT>)\n",
                headers={"WWW-Authenticate": f'Bearer realm="{REALM}", scope="{scope}"'},
            )
        try:
            claims = await self.verify(token)
        except TokenRejected as exc:
            metrics.oidc_verification("invalid")
            why = str(exc)
            return web.Response(
                status=401,
                text=f"invalid bearer token: {why}\n",
                headers={
                    "WWW-Authenticate": f'Bearer realm="{REALM}", error="invalid_token", '
                    f'error_description="{why}"'
                },
            )
        request[CLAIMS] = claims  # for the audit line (control/admin.py)
        if scope not in _scopes(claims):
            metrics.oidc_verification("forbidden")
            return web.Response(
                status=403,
                text=f"token lacks the {scope} scope\n",
                headers={
                    "WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope", '
                    f'scope="{scope}"'
                },
            )
        metrics.oidc_verification("ok")
        return None

    def _unavailable(self) -> web.Response:
        return web.Response(
            status=503,
            text=f"admin API unavailable: identity provider {self.issuer} not reachable "
            f"yet ({self._last_error}); retrying\n",
            headers={"Retry-After": "5"},
        )

    def discovery(self) -> dict[str, object] | web.Response | None:
        if self._provider is None:
            return self._unavailable()
        p = self._provider
        return {
            "issuer": self.issuer,
            "audience": self.audience or "",
            "scopes": list(SCOPES),
            "authorization_endpoint": p.get("authorization_endpoint", ""),
            "token_endpoint": p.get("token_endpoint", ""),
            "device_authorization_endpoint": p.get("device_authorization_endpoint", ""),
            "client_id_hint": self.client_id or "",
        }
