"""A real OpenID provider for the auth tests: panva's ``oidc-provider`` under Node.

``tests/idp/server.mjs`` runs it on 127.0.0.1; this module starts and stops
that process, owns its signing keys (so a test can forge tokens with the
IdP's own key), mints tokens with the client-credentials grant, and plays
the user's browser for the device grant (headless: the real ``/device``
pages, the dev login and the consent).
"""

from __future__ import annotations

import html
import http.cookiejar
import json
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

IDP_DIR = Path(__file__).parent / "idp"
AUDIENCE = "swsrs"
CI_CLIENT = ("swsrs-ci", "swsrs-ci-secret")
CLI_CLIENT = "swsrs-cli"
ALL_SCOPES = ("swsrs:session:create", "swsrs:session:read", "swsrs:session:delete")


def node_missing_reason() -> str | None:
    """Why the IdP cannot run here (node is not installed), or ``None`` when it can.

    With node present, a missing ``tests/idp/node_modules`` is installed here
    from the lockfile (``.ci/run`` does the same up front), so a forgotten
    install step fails loudly instead of skipping.
    """
    if shutil.which("node") is None:
        return "node is not installed (the test IdP is oidc-provider on Node.js)"
    if not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("tests/idp needs `npm ci` but npm is not installed")
        r = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                           cwd=IDP_DIR, capture_output=True, text=True, timeout=600)  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"`npm ci` in tests/idp failed:\n{r.stdout}{r.stderr}")
    return None


@dataclass
class SigningKey:
    kid: str
    private: Any  # an RSA or EC private key
    alg: str

    def jwk(self) -> dict[str, Any]:
        if self.alg.startswith("ES"):
            d = json.loads(ECAlgorithm.to_jwk(self.private))
        else:
            d = json.loads(RSAAlgorithm.to_jwk(self.private))
        d.update(kid=self.kid, alg=self.alg, use="sig")
        return dict(d)

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


def rsa_key(kid: str) -> SigningKey:
    return SigningKey(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")


def ec_key(kid: str) -> SigningKey:
    return SigningKey(kid, ec.generate_private_key(ec.SECP256R1()), "ES256")


@dataclass
class IdP:
    """A running oidc-provider process (``port`` 0: the IdP picks one and says which)."""

    port: int
    keys_path: Path
    log_path: Path
    keys: list[SigningKey]
    proc: subprocess.Popen[bytes] | None = None
    args: list[str] = field(default_factory=list)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_keys(self, keys: Sequence[SigningKey]) -> None:
        """The first key signs; the others are published for verification."""
        self.keys = list(keys)
        self.keys_path.write_text(json.dumps({"keys": [k.jwk() for k in self.keys]}))

    def start(self) -> None:
        logf = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            ["node", str(IDP_DIR / "server.mjs"), "--port", str(self.port),
             "--keys", str(self.keys_path), *self.args],
            stdout=subprocess.PIPE, stderr=logf, cwd=IDP_DIR,
        )  # fmt: skip
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().decode()  # blocks until bound, or EOF on exit
        if not first.startswith("idp listening on http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"IdP did not come up ({first!r}):\n{self.log_path.read_text()}")
        self.port = int(first.strip().rsplit(":", 1)[1])
        # Keep draining stdout so the IdP can never block on a full pipe.
        threading.Thread(
            target=shutil.copyfileobj, args=(self.proc.stdout, logf), daemon=True
        ).start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def rotate(self, keys: Sequence[SigningKey]) -> None:
        """Publish a new key set and sign with its first key from now on."""
        self.write_keys(keys)
        req = urllib.request.Request(self.issuer + "/__test/reload", method="POST")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def stats(self) -> dict[str, Any]:
        return dict(self.get_json("/__test/stats"))

    def get_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.issuer + path, timeout=10) as r:
            return json.loads(r.read())

    def client_credentials(self, scopes: Sequence[str]) -> str:
        """A real access token for the confidential client with exactly these scopes."""
        data = urllib.parse.urlencode(
            {"grant_type": "client_credentials", "client_id": CI_CLIENT[0],
             "client_secret": CI_CLIENT[1], "scope": " ".join(scopes)}
        ).encode()  # fmt: skip
        with urllib.request.urlopen(self.issuer + "/token", data=data, timeout=10) as r:
            return str(json.loads(r.read())["access_token"])

    def forge(
        self,
        claims: dict[str, Any] | None = None,
        *,
        key: SigningKey | None = None,
        headers: dict[str, Any] | None = None,
        drop: Sequence[str] = (),
    ) -> str:
        """A token signed with one of the IdP's own keys; defaults make it valid."""
        k = key or self.keys[0]
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": self.issuer, "aud": AUDIENCE, "sub": "tester", "iat": now,
            "exp": now + 300, "scope": " ".join(ALL_SCOPES),
        }  # fmt: skip
        body.update(claims or {})
        for name in drop:
            body.pop(name, None)
        return jwt.encode(
            body, k.private, algorithm=k.alg, headers={"kid": k.kid, **(headers or {})}
        )


def approve_device(verification_uri_complete: str, *, abort: bool = False) -> None:
    """Be the user: open the verification URL, confirm the code, log in, consent.

    Drives the provider's real pages (the device confirmation form, the
    development login, consent) with a cookie-keeping HTTP client. With
    ``abort`` the user presses "Abort" on the confirmation page instead.
    """
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with opener.open(verification_uri_complete, timeout=10) as r:
        page, url = r.read().decode(), r.geturl()
    for _ in range(10):
        if "Sign-in Success" in page or (abort and "interrupted" in page):
            return
        form = re.search(r"<form([^>]*)>(.*?)</form>", page, re.S)
        if form is None:
            raise AssertionError(f"no form on {url}:\n{page[:2000]}")
        action = re.search(r'action="([^"]*)"', form.group(1))
        fields: dict[str, str] = {}
        for tag in re.findall(r"<input([^>]*)>", form.group(2)):
            name = re.search(r'name="([^"]*)"', tag)
            value = re.search(r'value="([^"]*)"', tag)
            if name:
                fields[name.group(1)] = html.unescape(value.group(1)) if value else ""
        if "login" in fields:
            fields.update(login="operator", password="any")
        if abort and "confirm" in fields:
            fields["abort"] = "yes"
        target = urllib.parse.urljoin(url, html.unescape(action.group(1)) if action else url)
        data = urllib.parse.urlencode(fields).encode()
        try:
            with opener.open(target, data=data, timeout=10) as r:
                page, url = r.read().decode(), r.geturl()
        except urllib.error.HTTPError as e:
            page, url = e.read().decode(errors="replace"), target
            if abort:
                return
            raise AssertionError(f"{e.code} from {target}:\n{page[:2000]}") from None
    raise AssertionError(f"device approval did not finish; last page {url}:\n{page[:2000]}")
