"""Admin-plane OIDC against a real OpenID provider (oidc-provider on Node, 127.0.0.1).

Real tokens come from the IdP's client-credentials grant with exactly the
scopes a test wants; forged ones are signed in the test (with the IdP's own
key where the point is a bad claim, not a bad signature).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import jwt
import pytest

import swsrs
from swsrs.server.control.oidc import OIDCAuthorizer, TokenRejected

from .conftest import Relay, free_port, make_idp, oidc_flags, start_relay
from .oidc_idp import ALL_SCOPES, AUDIENCE, IdP, SigningKey, ec_key, rsa_key

CREATE, READ, DELETE = ALL_SCOPES


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(idp: IdP) -> str:
    """``alg: none`` with otherwise perfect claims."""
    now = int(time.time())
    header = {"alg": "none", "typ": "JWT", "kid": idp.keys[0].kid}
    claims = {"iss": idp.issuer, "aud": AUDIENCE, "exp": now + 300, "iat": now,
              "scope": " ".join(ALL_SCOPES)}  # fmt: skip
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}."


def hmac_with_public_key(idp: IdP) -> str:
    """HS256 keyed with the IdP's public key PEM: the classic algorithm-confusion forgery."""
    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT", "kid": idp.keys[0].kid}
    claims = {"iss": idp.issuer, "aud": AUDIENCE, "exp": now + 300, "iat": now,
              "scope": " ".join(ALL_SCOPES)}  # fmt: skip
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    mac = hmac.new(idp.keys[0].public_pem(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


@pytest.fixture(scope="module")
def oidc_relay(idp: IdP, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    r = start_relay(tmp_path_factory.mktemp("relay"), *oidc_flags(idp), no_auth=False)
    yield r
    r.stop()


def call(
    relay: Relay, method: str, path: str, token: str | None
) -> tuple[int, dict[str, str], str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    status, hdrs, body = relay.request(method, path, headers=headers)
    return status, hdrs, body.decode(errors="replace")


def now() -> int:
    return int(time.time())


INVALID: dict[str, Callable[[IdP], str | None]] = {
    "no token": lambda idp: None,
    "garbage": lambda idp: "garbage",
    "three garbage segments": lambda idp: "a.b.c",
    "expired": lambda idp: idp.forge({"exp": now() - 3600, "iat": now() - 7200}),
    "not yet valid": lambda idp: idp.forge({"nbf": now() + 3600}),
    "wrong issuer": lambda idp: idp.forge({"iss": "http://127.0.0.1:1/evil"}),
    "wrong audience": lambda idp: idp.forge({"aud": "someone-else"}),
    "no audience": lambda idp: idp.forge(drop=["aud"]),
    "no exp": lambda idp: idp.forge(drop=["exp"]),
    "unsigned (alg none)": unsigned,
    "HMAC with the public key": hmac_with_public_key,
    "signed by a stranger, IdP's kid": lambda idp: idp.forge(
        key=SigningKey(idp.keys[0].kid, rsa_key("x").private, "RS256")
    ),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_tokens_get_401(oidc_relay: Relay, idp: IdP, case: str) -> None:
    token = INVALID[case](idp)
    status, headers, body = call(oidc_relay, "POST", "/admin/sessions", token)
    assert status == 401, body
    challenge = headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    if token is not None:
        assert 'error="invalid_token"' in challenge
        assert token not in body and token not in challenge
    assert body.count("\n") == 1 and body.strip()  # one line that says why


def test_expired_says_so(oidc_relay: Relay, idp: IdP) -> None:
    _, headers, body = call(oidc_relay, "GET", "/admin/sessions", INVALID["expired"](idp))
    assert "expired" in body and "expired" in headers["WWW-Authenticate"]


VALID: dict[str, Callable[[IdP], str]] = {
    "real token from the IdP": lambda idp: idp.client_credentials(ALL_SCOPES),
    "scope string": lambda idp: idp.forge({"scope": " ".join(ALL_SCOPES)}),
    "scp array": lambda idp: idp.forge({"scp": list(ALL_SCOPES)}, drop=["scope"]),
    "ES256 key": lambda idp: idp.forge(key=idp.keys[1]),
    "aud as a list": lambda idp: idp.forge({"aud": ["other", AUDIENCE]}),
    "expired within the leeway": lambda idp: idp.forge({"exp": now() - 5}),
}


@pytest.mark.parametrize("case", list(VALID))
def test_valid_tokens_pass_every_route(oidc_relay: Relay, idp: IdP, case: str) -> None:
    token = VALID[case](idp)
    status, _, body = call(oidc_relay, "POST", "/admin/sessions", token)
    assert status == 201, body
    sid = json.loads(body)["id"]
    assert call(oidc_relay, "GET", "/admin/sessions", token)[0] == 200
    assert call(oidc_relay, "GET", f"/admin/sessions/{sid}", token)[0] == 200
    assert call(oidc_relay, "DELETE", f"/admin/sessions/{sid}", token)[0] == 204


ROUTES = [
    ("POST", "/admin/sessions", CREATE, 201),
    ("GET", "/admin/sessions", READ, 200),
    ("GET", "/admin/sessions/nosuchsession", READ, 404),
    ("DELETE", "/admin/sessions/nosuchsession", DELETE, 404),
]


@pytest.mark.parametrize(("method", "path", "scope", "ok"), ROUTES)
@pytest.mark.parametrize("claim", ["scope", "scp"])
def test_each_route_needs_its_scope(
    oidc_relay: Relay, idp: IdP, method: str, path: str, scope: str, ok: int, claim: str
) -> None:
    others = [s for s in ALL_SCOPES if s != scope]
    if claim == "scope":
        without = idp.client_credentials(others)  # a real token lacking just this scope
        only = idp.client_credentials([scope])
    else:
        without = idp.forge({"scp": others}, drop=["scope"])
        only = idp.forge({"scp": [scope]}, drop=["scope"])
    status, headers, body = call(oidc_relay, method, path, without)
    assert status == 403, body
    assert scope in body and 'error="insufficient_scope"' in headers["WWW-Authenticate"]
    assert call(oidc_relay, method, path, only)[0] == ok


def test_discovery_document(oidc_relay: Relay, idp: IdP) -> None:
    status, headers, body = oidc_relay.request("GET", "/.well-known/swsrs-config")
    assert status == 200 and headers["Cache-Control"] == "public, max-age=300"
    doc = json.loads(body)
    provider = idp.get_json("/.well-known/openid-configuration")
    assert doc == {
        "issuer": idp.issuer,
        "audience": AUDIENCE,
        "scopes": list(ALL_SCOPES),
        "authorization_endpoint": provider["authorization_endpoint"],
        "token_endpoint": provider["token_endpoint"],
        "device_authorization_endpoint": provider["device_authorization_endpoint"],
        "client_id_hint": "swsrs-cli",
    }


def test_without_audience_flag_any_audience_passes(idp: IdP, tmp_path: Path) -> None:
    relay = start_relay(tmp_path, "--oidc-issuer", idp.issuer, no_auth=False)
    try:
        status, _, body = call(relay, "POST", "/admin/sessions", idp.forge({"aud": "other"}))
        assert status == 201, body
        doc = json.loads(relay.request("GET", "/.well-known/swsrs-config")[2])
        assert doc["audience"] == "" and doc["client_id_hint"] == ""
        assert call(relay, "POST", "/admin/sessions", INVALID["wrong issuer"](idp))[0] == 401
    finally:
        relay.stop()


def test_key_rotation_and_refetch_floor(tmp_path: Path) -> None:
    old = rsa_key("old")
    idp = make_idp(tmp_path, keys=[old])
    relay = start_relay(tmp_path, *oidc_flags(idp), no_auth=False)
    try:
        assert call(relay, "POST", "/admin/sessions", idp.client_credentials([CREATE]))[0] == 201
        fetched = idp.stats()["jwks"]

        new = rsa_key("new")
        idp.rotate([new, old])  # the IdP now signs with "new"; the relay has never seen it
        token = idp.client_credentials([CREATE])
        assert json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"] == "new"
        status, _, body = call(relay, "POST", "/admin/sessions", token)
        assert status == 201, body
        assert idp.stats()["jwks"] == fetched + 1
        assert call(relay, "POST", "/admin/sessions", idp.forge(key=old))[0] == 201

        # Made-up key ids do not make the relay hammer the IdP.
        for i in range(20):
            forged = idp.forge(key=SigningKey(f"random-{i}", rsa_key("x").private, "RS256"))
            status, _, body = call(relay, "POST", "/admin/sessions", forged)
            assert status == 401 and "signing key" in body
        assert idp.stats()["jwks"] <= fetched + 2
        assert "JWKS refetched" in relay.log()
    finally:
        relay.stop()
        idp.stop()


def _wait_for(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_idp_down_at_start_then_up(tmp_path: Path) -> None:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    relay = start_relay(
        tmp_path, "--oidc-issuer", issuer, "--oidc-audience", AUDIENCE, no_auth=False
    )
    try:
        # Up and serving: health, the data plane (unknown session), and a clear 503 for admin.
        assert relay.request("GET", "/healthz")[0] == 200
        assert relay.request("GET", "/relay/nosuch")[0] == 404
        status, headers, body = relay.request("POST", "/admin/sessions")
        assert status == 503 and b"identity provider" in body and b"retrying" in body
        assert body.count(b"\n") == 1 and "Retry-After" in headers
        assert relay.request("GET", "/.well-known/swsrs-config")[0] == 503
        assert "OIDC discovery failed at start" in relay.log()

        # The IdP comes up on the issuer's port; the relay's background retry finds it.
        idp = IdP(port=port, keys_path=tmp_path / "keys.json", log_path=tmp_path / "idp.log",
                   keys=[])  # fmt: skip
        idp.write_keys([rsa_key("k"), ec_key("e")])
        idp.start()
        try:
            _wait_for(lambda: relay.request("POST", "/admin/sessions")[0] == 401, 60, "the retry")
            token = idp.client_credentials([CREATE])
            assert call(relay, "POST", "/admin/sessions", token)[0] == 201
            assert "admin API available" in relay.log()
        finally:
            idp.stop()
    finally:
        relay.stop()


async def test_idp_outage_never_touches_tunnels(tmp_path: Path) -> None:
    idp = make_idp(tmp_path)
    relay = start_relay(tmp_path, *oidc_flags(idp), no_auth=False)
    try:
        token = idp.client_credentials(ALL_SCOPES)
        async with swsrs.AdminClient(relay.url, token) as admin:
            s = await admin.create()
            acc = asyncio.create_task(swsrs.accept(relay.url, s.id, s.responder_token))
            ini = await swsrs.dial(relay.url, s.id, s.initiator_token)
            res = await acc
            await ini.send(b"before")
            assert await res.recv() == b"before"

            idp.stop()  # the IdP goes away mid-tunnel

            for i in range(50):
                await ini.send(b"x" * i)
                assert await res.recv() == b"x" * i
            # Admin calls still verify with the cached keys.
            assert (await admin.get(s.id)).state == "open"
            await ini.close()
            await res.close()
    finally:
        relay.stop()
        idp.stop()


def test_discovery_is_fetched_once_not_per_request(oidc_relay: Relay, idp: IdP) -> None:
    token = idp.client_credentials(ALL_SCOPES)
    before = idp.stats()
    for _ in range(10):
        assert call(oidc_relay, "GET", "/admin/sessions", token)[0] == 200
    assert idp.stats() == before


def test_token_never_reaches_the_log(oidc_relay: Relay, idp: IdP) -> None:
    token = idp.client_credentials(ALL_SCOPES)
    call(oidc_relay, "POST", "/admin/sessions", token)
    call(oidc_relay, "POST", "/admin/sessions", token[:-4] + "AAAA")
    assert token[:40] not in oidc_relay.log()


async def test_concurrent_new_kid_shares_one_fetch(tmp_path: Path) -> None:
    old = rsa_key("old")
    idp = make_idp(tmp_path, keys=[old])
    relay = start_relay(tmp_path, *oidc_flags(idp), no_auth=False)
    try:
        before = idp.stats()["jwks"]
        idp.rotate([rsa_key("new"), old])
        tokens = [idp.client_credentials([READ]) for _ in range(10)]
        async with aiohttp.ClientSession() as http:

            async def get(token: str) -> int:
                headers = {"Authorization": f"Bearer {token}"}
                async with http.get(relay.url + "/admin/sessions", headers=headers) as r:
                    return r.status

            assert await asyncio.gather(*(get(t) for t in tokens)) == [200] * 10
        assert idp.stats()["jwks"] == before + 1
    finally:
        relay.stop()
        idp.stop()


async def test_hmac_and_none_refused_even_if_the_key_set_offers_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A JWKS that also publishes a symmetric key: its kid still cannot sign anything."""
    rsa = rsa_key("rsa")
    secret = b"s" * 64
    documents = {
        "http://idp.test/.well-known/openid-configuration": {
            "issuer": "http://idp.test", "jwks_uri": "http://idp.test/jwks",
        },
        "http://idp.test/jwks": {"keys": [
            {"kty": "oct", "kid": "sym", "k": b64(secret), "alg": "HS256"}, rsa.jwk(),
        ]},
    }  # fmt: skip

    async def fake_get_json(self: OIDCAuthorizer, url: str) -> object:
        return documents[url]

    monkeypatch.setattr(OIDCAuthorizer, "_get_json", fake_get_json)
    auth = OIDCAuthorizer("http://idp.test", audience=AUDIENCE)
    await auth.start()
    try:
        assert auth.ready
        claims = {"iss": "http://idp.test", "aud": AUDIENCE, "exp": now() + 60}
        good = jwt.encode(claims, rsa.private, algorithm="RS256", headers={"kid": "rsa"})
        assert (await auth.verify(good))["aud"] == AUDIENCE
        for alg in ("HS256", "HS512"):
            forged = jwt.encode(claims, secret, algorithm=alg, headers={"kid": "sym"})
            with pytest.raises(TokenRejected, match="not allowed"):
                await auth.verify(forged)
        none = b64(json.dumps({"alg": "none", "kid": "sym"}).encode())
        with pytest.raises(TokenRejected, match="not allowed"):
            await auth.verify(f"{none}.{b64(json.dumps(claims).encode())}.")
        # An asymmetric alg naming the symmetric key's kid finds no key either.
        confused = jwt.encode(claims, rsa.private, algorithm="RS256", headers={"kid": "sym"})
        with pytest.raises(TokenRejected, match="signing key"):
            await auth.verify(confused)
        # A JWKS of symmetric keys alone is no key set at all.
        documents["http://idp.test/jwks"] = {"keys": [{"kty": "oct", "k": b64(secret)}]}
        with pytest.raises(RuntimeError, match="no usable signing keys"):
            await auth._load()
    finally:
        await auth.stop()
