"""The relay server: admin API, data plane and session lifecycle."""

from swsrs.server.app import Relay, serve
from swsrs.server.config import ServerConfig
from swsrs.server.control.admin import Authorizer, NoAuth
from swsrs.server.control.oidc import OIDCAuthorizer

__all__ = ["Authorizer", "NoAuth", "OIDCAuthorizer", "Relay", "ServerConfig", "serve"]
