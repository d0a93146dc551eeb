"""Files for browsers: the JavaScript client at ``/swsrs.js`` (always) and, with
``--demo``, the two-party chat page at ``/demo/chat.html``.

Both ship inside the package (``swsrs/web/``) and are read once at start.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web
from aiohttp.typedefs import Handler

CLIENT_PATH = "/swsrs.js"
CHAT_PATH = "/demo/chat.html"


def _asset(name: str) -> bytes:
    return (resources.files("swsrs") / "web" / name).read_bytes()


def _static(name: str, content_type: str, **extra: str) -> Handler:
    """A handler answering with one packaged file, read once."""
    body = _asset(name)
    headers = {
        "Content-Type": content_type,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        **extra,
    }

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, headers=headers)

    return handler


def routes(*, demo: bool) -> list[web.RouteDef]:
    # The client is public and credential-free: any origin may import it as a module.
    client_js = _static(
        "swsrs.js", "text/javascript; charset=utf-8", **{"Access-Control-Allow-Origin": "*"}
    )
    out = [web.get(CLIENT_PATH, client_js)]
    if demo:
        chat_html = _static("chat.html", "text/html; charset=utf-8")

        async def to_chat(request: web.Request) -> web.Response:
            raise web.HTTPFound(CHAT_PATH)

        out += [web.get(CHAT_PATH, chat_html), web.get("/demo/", to_chat)]
    return out
