"""Files for browsers: the JavaScript client at ``/swsrs.js`` (always) with the
modules it imports next to it (``/swsrs-*.js``) and, with ``--demo``, the
two-party chat page at ``/demo/chat.html``.

All ship inside the package (``swsrs/web/``) and are read once at start.
"""

from __future__ import annotations

import re
from importlib import resources

from aiohttp import web
from aiohttp.typedefs import Handler

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


def client_modules() -> list[str]:
    """``swsrs.js`` and the modules it imports (``swsrs-*.js``), as packaged."""
    web_dir = resources.files("swsrs") / "web"
    return sorted(f.name for f in web_dir.iterdir() if re.fullmatch(r"swsrs(-[a-z]+)?\.js", f.name))


def routes(*, demo: bool) -> list[web.RouteDef]:
    # The client is public and credential-free: any origin may import it as a module.
    public = {"Access-Control-Allow-Origin": "*"}
    out = [
        web.get(f"/{name}", _static(name, "text/javascript; charset=utf-8", **public))
        for name in client_modules()
    ]
    if demo:
        chat_html = _static("chat.html", "text/html; charset=utf-8")

        async def to_chat(request: web.Request) -> web.Response:
            raise web.HTTPFound(CHAT_PATH)

        out += [web.get(CHAT_PATH, chat_html), web.get("/demo/", to_chat)]
    return out
