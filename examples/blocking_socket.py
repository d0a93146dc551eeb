"""Hand a tunnel to blocking code that wants a socket (no asyncio in sight).

One end runs a line-echo service on a plain socket, the other talks to it.
The same ``sock`` works for paramiko (``SSHClient.connect(..., sock=sock)``).

    swsrs serve --no-auth --addr 127.0.0.1:8080 &
    python examples/blocking_socket.py http://127.0.0.1:8080
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import urllib.request

import swsrs


def create_session(relay: str) -> dict[str, str]:
    req = urllib.request.Request(f"{relay}/admin/sessions", method="POST")
    with urllib.request.urlopen(req) as r:  # --no-auth; else add an Authorization header
        return dict(json.load(r))


def echo_service(sock: socket.socket) -> None:
    with sock, sock.makefile("rwb") as f:
        for line in f:
            f.write(b"echo: " + line)
            f.flush()


def main(relay: str) -> None:
    s = create_session(relay)
    # open_socket blocks until attached, so attach the responder in a thread.
    box: list[socket.socket] = []
    t = threading.Thread(target=lambda: box.append(
        swsrs.open_socket(relay, s["id"], s["responder_token"], role="responder")))  # fmt: skip
    t.start()
    client = swsrs.open_socket(relay, s["id"], s["initiator_token"], role="initiator")
    t.join()
    threading.Thread(target=echo_service, args=(box[0],), daemon=True).start()

    with client, client.makefile("rwb") as f:
        for word in (b"one", b"two", b"three"):
            f.write(word + b"\n")
            f.flush()
            print(f.readline().decode().rstrip())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080")
