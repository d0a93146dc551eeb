"""Wire-level WebSocket pieces (RFC 6455) with no I/O: frames and the handshake."""
