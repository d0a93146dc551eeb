"""``/swsrs.js`` (always) and the ``--demo`` chat page: served from the package, import-friendly."""

from __future__ import annotations

from typing import Any

from swsrs.server.config import load

from .conftest import Relay


def test_client_module_is_always_served_cross_origin(relay: Relay) -> None:
    code, h, body = relay.request("GET", "/swsrs.js", headers={"Origin": "https://elsewhere.test"})
    assert code == 200
    assert h["Content-Type"] == "text/javascript; charset=utf-8"
    assert h["Access-Control-Allow-Origin"] == "*"  # a public file: any page may import it
    assert b"export class AdminClient" in body and b"export function dial" in body
    assert relay.request("GET", "/demo/chat.html")[0] == 404  # only with --demo


def test_demo_serves_the_chat_page(relay_factory: Any) -> None:
    relay: Relay = relay_factory(env={"SWSRS_DEMO": "1"})
    code, h, body = relay.request("GET", "/demo/chat.html")
    assert code == 200 and h["Content-Type"] == "text/html; charset=utf-8"
    assert b'from "../swsrs.js"' in body
    assert relay.request("GET", "/demo/")[2] == body  # redirected
    assert "demo chat page: http://127.0.0.1:" in relay.log()


def test_demo_flag_and_env() -> None:
    assert load({"no_auth": True}, {}).demo is False
    assert load({"no_auth": True, "demo": True}, {}).demo is True
    assert load({"no_auth": True}, {"SWSRS_DEMO": "true"}).demo is True


def test_bad_demo_env_is_a_config_error() -> None:
    import pytest

    from swsrs.errors import ConfigError

    with pytest.raises(ConfigError, match="SWSRS_DEMO"):
        load({"no_auth": True}, {"SWSRS_DEMO": "maybe"})
