"""The relay server: admin API, data plane and session lifecycle."""

from swsrs.server.app import Relay, serve
from swsrs.server.config import ServerConfig

__all__ = ["Relay", "ServerConfig", "serve"]
