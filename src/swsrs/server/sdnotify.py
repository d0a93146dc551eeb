"""systemd readiness (``Type=notify``): ``READY=1`` once the relay listens, ``STOPPING=1`` at
shutdown, as datagrams on the unix socket named by ``$NOTIFY_SOCKET`` (sd_notify(3)).

No dependency: the protocol is one datagram of ``KEY=value`` lines. Without
``NOTIFY_SOCKET`` (not started by systemd) nothing happens; a failure to send is logged
once and never stops the relay.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("swsrs.server")


def notify(state: str) -> bool:
    """Send ``state`` (``"READY=1"``…) to the service manager; ``True`` if it was sent."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    if path.startswith("@"):  # an abstract socket
        path = "\0" + path[1:]
    elif not path.startswith("/"):
        log.warning("NOTIFY_SOCKET %r is not a unix socket path; systemd not notified", path)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(path)
            s.sendall(state.encode())
    except OSError as exc:
        log.warning("cannot notify systemd at %s: %s", path.lstrip("\0"), exc.strerror or exc)
        return False
    return True
