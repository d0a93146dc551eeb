"""``connect`` / ``dial`` / ``accept``: attach to a session's slot and get a :class:`Connection`."""

from __future__ import annotations

import asyncio

import aiohttp

from swsrs.client.connection import FEATURES, Connection, EventCallback, Role, SSLArg
from swsrs.client.proxy import client_session
from swsrs.errors import (
    Forbidden,
    HandshakeTimeout,
    HTTPStatusError,
    NotFound,
    RelayUnreachable,
    SlotTaken,
    Unauthorized,
    os_reason,
)
from swsrs.peer.resume import DEFAULT_BUFFER
from swsrs.urls import relay_url
from swsrs.wire import subprotocol

_REFUSALS: dict[int, tuple[type[HTTPStatusError], str]] = {
    404: (NotFound, "session not found or expired"),
    401: (Unauthorized, "token refused by the relay"),
    403: (Forbidden, "connection forbidden by the relay (Origin not allowed?)"),
    409: (SlotTaken, "this slot of the session is already held by another connection"),
}


async def connect(
    url: str,
    session: str,
    token: str,
    *,
    role: Role = "responder",
    handshake_timeout: float = 10.0,
    keepalive: float | None = 20.0,
    ssl: SSLArg = None,
    max_message_size: int = 0,
    extensions: bool = True,
    auto_ack: bool = True,
    on_event: EventCallback | None = None,
    reconnect: float = 0.0,
    resume_buffer: int = DEFAULT_BUFFER,
    proxy: str | None = None,
) -> Connection:
    """Attach to ``role``'s slot of ``session`` on the relay at ``url``.

    ``url`` is the relay's base (``http(s)://`` or ``ws(s)://``); ``keepalive``
    is the ping interval in seconds (``None`` for none); ``max_message_size``
    0 means unlimited. ``extensions`` offers the ``swsrs.v1`` peer protocol
    (pairing signal, end-of-stream, confirmed delivery); without it, or when
    the relay or the other side does not speak it, the tunnel carries raw
    messages as the reference does. ``reconnect`` (seconds, 0 = never) offers
    resume: after a drop both sides attach again within that time and the
    stream goes on where it broke, ``resume_buffer`` units being kept for
    resending (a full buffer pauses sending). ``on_event`` sees
    :mod:`swsrs.peer.events` (waiting, paired, away, reconnecting, resumed,
    ended) as they happen. ``proxy`` is an HTTP proxy URL to tunnel through
    (``CONNECT``; ``""``: none; ``None``: ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``
    from the environment, see :mod:`swsrs.client.proxy`). Raises :class:`~swsrs.NotFound`,
    :class:`~swsrs.Unauthorized`, :class:`~swsrs.SlotTaken`,
    :class:`~swsrs.RelayUnreachable` or :class:`~swsrs.HandshakeTimeout`.
    """
    features = FEATURES | {"resume"} if extensions and reconnect > 0 else FEATURES
    target = relay_url(url, session)

    async def opener() -> tuple[aiohttp.ClientWebSocketResponse, aiohttp.ClientSession]:
        http = client_session(proxy)
        try:
            ws = await asyncio.wait_for(
                http.ws_connect(
                    target,
                    headers={"Authorization": f"Bearer {token}"},
                    autoping=False,  # pings are answered, and sent, by the Connection
                    heartbeat=None,
                    max_msg_size=max_message_size,
                    ssl=ssl if ssl is not None else True,
                    protocols=subprotocol.offer(features) if extensions else (),
                ),
                handshake_timeout,
            )
        except aiohttp.WSServerHandshakeError as exc:
            await http.close()
            kind, text = _REFUSALS.get(exc.status, (HTTPStatusError, "relay refused the attach"))
            raise kind(exc.status, f"{text} (HTTP {exc.status})") from None
        except TimeoutError:
            await http.close()
            raise HandshakeTimeout(
                f"no answer from {target} within {handshake_timeout:g}s"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            await http.close()
            raise RelayUnreachable(f"cannot reach the relay at {url}: {_reason(exc)}") from None
        except BaseException:
            await http.close()
            raise
        return ws, http

    ws, http = await opener()
    return Connection(
        ws,
        http,
        session_id=session,
        role=role,
        auto_ack=auto_ack,
        on_event=on_event,
        keepalive=keepalive,
        features=features,
        resume_buffer=resume_buffer,
        reopen=opener if "resume" in features else None,
        reconnect_for=reconnect,
    )


def _reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return os_reason(exc.os_error)
    if isinstance(exc, OSError):
        return os_reason(exc)
    return str(exc) or type(exc).__name__


async def dial(url: str, session: str, token: str, **kwargs: object) -> Connection:
    """Attach as the initiator (see :func:`connect`)."""
    return await connect(url, session, token, role="initiator", **kwargs)  # type: ignore[arg-type]


async def accept(url: str, session: str, token: str, **kwargs: object) -> Connection:
    """Attach as the responder (see :func:`connect`)."""
    return await connect(url, session, token, role="responder", **kwargs)  # type: ignore[arg-type]
