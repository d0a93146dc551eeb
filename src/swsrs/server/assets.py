"""Files for browsers: the JavaScript client at ``/swsrs.js`` (always) and, with
``--demo``, the two-party chat page at ``/demo/chat.html``.

Both ship inside the package (``swsrs/web/``) and are read once at start.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

CLIENT_PATH = "/swsrs.js"
CHAT_PATH = "/demo/chat.html"


def _asset(name: str) -> bytes:
    return (resources.files("swsrs") / "web" / name).read_bytes()


def routes(*, demo: bool) -> list[web.RouteDef]:
    client = _asset("swsrs.js")

    async def client_js(request: web.Request) -> web.Response:
        # A public, credential-free file: any origin may import it as a module.
        return web.Response(
            body=client,
            headers={
                "Content-Type": "text/javascript; charset=utf-8",
                "Access-Control-Allow-Origin": "*",
                "Cache-Control": "no-cache",
                "X-Content-Type-Options": "nosniff",
            },
        )

    out = [web.get(CLIENT_PATH, client_js)]
    if demo:
        chat = _asset("chat.html")

        async def chat_html(request: web.Request) -> web.Response:
            return web.Response(
                body=chat,
                headers={
                    "Content-Type": "text/html; charset=utf-8",
                    "Cache-Control": "no-cache",
                    "X-Content-Type-Options": "nosniff",
                },
            )

        async def to_chat(request: web.Request) -> web.Response:
            raise web.HTTPFound(CHAT_PATH)

        out += [web.get(CHAT_PATH, chat_html), web.get("/demo/", to_chat)]
    return out
