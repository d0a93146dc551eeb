"""CORS on ``/admin/*`` and ``/.well-known/*`` (SPEC 6), from the ``Origin`` allowlist
of :mod:`swsrs.server.origins`."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from swsrs.server.origins import OriginPolicy

CORS_PREFIXES = ("/admin/", "/.well-known/")
ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
DEFAULT_ALLOW_HEADERS = "Authorization, Content-Type"
MAX_AGE = "600"


def cors_headers(
    policy: OriginPolicy,
    headers: Mapping[str, str],
    *,
    preflight: bool = False,
) -> dict[str, str]:
    """The CORS headers for a response to a request with ``headers`` (always ``Vary: Origin``).

    An allowed origin gets ``Access-Control-Allow-Origin`` (the origin itself)
    and ``-Allow-Credentials``; a preflight also gets the methods, the
    requested headers echoed (default ``Authorization, Content-Type``) and a
    ``Max-Age``. A disallowed or missing origin gets no CORS header.
    """
    out = {"Vary": "Origin"}
    origin = headers.get("Origin")
    if origin is None or not policy.allows(origin, headers.get("Host")):
        return out
    out["Access-Control-Allow-Origin"] = origin.strip()
    out["Access-Control-Allow-Credentials"] = "true"
    if preflight:
        out["Access-Control-Allow-Methods"] = ALLOW_METHODS
        requested = headers.get("Access-Control-Request-Headers", "").strip()
        out["Access-Control-Allow-Headers"] = requested or DEFAULT_ALLOW_HEADERS
        out["Access-Control-Max-Age"] = MAX_AGE
    return out


def _merge_vary(resp_headers: Mapping[str, str], extra: dict[str, str]) -> dict[str, str]:
    vary = resp_headers.get("Vary")
    if vary and "origin" not in vary.lower():
        extra = {**extra, "Vary": f"{vary}, Origin"}
    elif vary:
        extra = {k: v for k, v in extra.items() if k != "Vary"}
    return extra


def cors_middleware(policy: OriginPolicy) -> Middleware:
    """CORS for ``/admin/*`` and ``/.well-known/*``, error responses included.

    A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is
    answered here: ``204`` with the CORS headers when the origin is allowed,
    ``403`` without them when it is not (the browser blocks the request
    either way; the status makes the reason visible in developer tools).
    Beyond the reference, an ``/admin/*`` request from a disallowed origin is
    refused with ``403`` before the admin API sees it, so a page elsewhere
    cannot make a ``--no-auth`` relay act through a request that needs no
    preflight (``POST`` without a body). ``/.well-known/*`` is public and
    only loses its CORS headers.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(CORS_PREFIXES):
            return await handler(request)
        if request.method == "OPTIONS":
            is_preflight = "Access-Control-Request-Method" in request.headers
            hdrs = cors_headers(policy, request.headers, preflight=is_preflight)
            if is_preflight and "Access-Control-Allow-Origin" not in hdrs:
                return web.Response(status=403, text="origin not allowed\n", headers=hdrs)
            if not is_preflight:
                hdrs["Allow"] = ALLOW_METHODS
            return web.Response(status=204, headers=hdrs)
        hdrs = cors_headers(policy, request.headers)
        origin = request.headers.get("Origin")
        if (
            origin is not None
            and request.path.startswith("/admin/")
            and "Access-Control-Allow-Origin" not in hdrs
        ):
            # The browser would hide the answer anyway; refusing also stops a
            # request it sends without a preflight (a bare POST) from acting.
            return web.Response(
                status=403, text=f"origin {origin[:200]!r} is not allowed\n", headers=hdrs
            )
        try:
            resp = await handler(request)
        except web.HTTPException as exc:  # 404 for an unknown path, 405, ...
            exc.headers.update(_merge_vary(exc.headers, hdrs))
            raise
        if not resp.prepared:
            resp.headers.update(_merge_vary(resp.headers, hdrs))
        return resp

    return middleware
