"""Mint a session, attach both ends, and move messages and bytes through the relay.

Run it against a local relay::

    swsrs serve --no-auth --addr 127.0.0.1:8080 &
    python examples/quickstart.py http://127.0.0.1:8080
"""

from __future__ import annotations

import asyncio
import sys

import swsrs


async def main(relay: str) -> None:
    async with swsrs.AdminClient(relay) as admin:  # token="…" or a provider callable
        s = await admin.create()
        print("session", s.id, "is", (await admin.get(s.id)).state)

    # The two ends of one tunnel; usually on two machines behind two NATs.
    responder_task = asyncio.create_task(swsrs.accept(relay, s.id, s.responder_token))
    initiator = await swsrs.dial(relay, s.id, s.initiator_token)
    responder = await responder_task

    # Message view: one WebSocket message each, type kept (bytes or str).
    await initiator.send(b"\x00binary")
    await initiator.send("text")
    print("responder got", await responder.recv(), await responder.recv())

    # Byte-stream view: read/write like asyncio streams.
    await responder.write(b"hello")
    print("initiator read", await initiator.readexactly(5))

    # A clean end: each side ends its stream (write_eof); the other reads the end once
    # every byte has arrived. finish() ends ours and returns once both are delivered.
    await initiator.write_eof()
    try:
        await responder.recv()
    except swsrs.PeerGone as exc:
        print("responder saw the end:", exc, "(clean)" if exc.clean else "(cut)")
    ends = await asyncio.gather(responder.finish(), initiator.finish())
    print("delivered both ways:", all(end.ok for end in ends))
    await initiator.close()
    await responder.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080"))
