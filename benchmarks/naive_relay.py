"""The baseline every optimisation is measured against: a textbook aiohttp relay.

Receive a whole message with ``WebSocketResponse.receive()``, send it to the
other side, repeat. No auth, no sessions: the two peers of ``/relay/{id}``
are paired by id. Run: ``python benchmarks/naive_relay.py PORT``.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import WSMsgType, web

waiting: dict[str, tuple[web.WebSocketResponse, asyncio.Future[web.WebSocketResponse]]] = {}


async def pump(src: web.WebSocketResponse, dst: web.WebSocketResponse) -> None:
    async for msg in src:
        if msg.type == WSMsgType.BINARY:
            await dst.send_bytes(msg.data)
        elif msg.type == WSMsgType.TEXT:
            await dst.send_str(msg.data)
    await dst.close()


async def handler(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    sid = request.match_info["id"]
    if sid in waiting:
        other, fut = waiting.pop(sid)
        fut.set_result(ws)
        await pump(ws, other)
    else:
        fut: asyncio.Future[web.WebSocketResponse] = asyncio.get_running_loop().create_future()
        waiting[sid] = (ws, fut)
        other = await fut
        await pump(ws, other)
    return ws


def main() -> None:
    app = web.Application()
    app.router.add_get("/relay/{id}", handler)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
