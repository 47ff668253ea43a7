"""A token server for the distribution registry's ``auth: token:`` mode, as the token spec describes it.

``GET /token?service=S&scope=repository:NAME:pull,push`` with Basic auth answers
``{"token": JWT, "access_token": JWT, "expires_in": N}``; the JWT is signed RS256 with a key whose
self-signed certificate travels in the ``x5c`` header and is the registry's ``rootcertbundle``.
Users are given as {name: password}; ``read_only`` users get ``pull`` only; a wrong password is
HTTP 401. ``token_lifetime`` < 0 issues tokens that have already expired. Runs on a thread on loopback.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

SERVICE = "edge-test-registry"
ISSUER = "edge-test-token-issuer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """The token endpoint on ``127.0.0.1:<port>/token``; ``start()``/``stop()``; ``requests`` counts calls."""

    def __init__(
        self,
        workdir: Path,
        users: Dict[str, str],
        read_only: Optional[Set[str]] = None,
        token_lifetime: int = 300,
    ) -> None:
        self.users = users
        self.read_only = read_only or set()
        self.token_lifetime = token_lifetime
        self.requests = 0
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = datetime.datetime.now(datetime.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        workdir.mkdir(parents=True, exist_ok=True)
        self.cert_path = workdir / "token-signer.pem"
        self.cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self._server.server_address[1]
        self._thread: Optional[threading.Thread] = None

    @property
    def realm(self) -> str:
        """The URL the registry sends clients to."""
        return f"http://127.0.0.1:{self.port}/token"

    def registry_auth(self) -> str:
        """The ``auth:`` section of the registry's config.yml."""
        return (
            "auth:\n  token:\n"
            f"    realm: {self.realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n"
            f"    rootcertbundle: {self.cert_path}\n"
        )

    def start(self) -> TokenServer:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def token(self, user: str, access: List[Dict[str, Any]]) -> str:
        """A signed JWT for ``user`` granting ``access``."""
        now = int(time.time())
        header = {
            "typ": "JWT",
            "alg": "RS256",
            "x5c": [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()],
        }
        exp = now + self.token_lifetime
        claims = {
            "iss": ISSUER,
            "sub": user,
            "aud": SERVICE,
            "exp": exp,
            "nbf": min(now - 10, exp - 10),
            "iat": min(now, exp - 5),
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}".encode()
        sig = self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input.decode()}.{_b64(sig)}"

    def _grant(self, user: str, scopes: List[str]) -> List[Dict[str, Any]]:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = [a for a in actions.split(",") if a]
            allowed = [a for a in wanted if user not in self.read_only or a == "pull"]
            if kind in ("repository", "registry") and name and allowed:
                access.append({"type": kind, "name": name, "actions": allowed})
        return access

    def _handler(self) -> type:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                server.requests += 1
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                user = ""
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    if server.users.get(user) != password:
                        self.send_error(401, "bad login")
                        return
                if url.path != "/token" or query.get("service") != [SERVICE]:
                    self.send_error(400, "bad token request")
                    return
                access = server._grant(user, query.get("scope", [])) if user else []
                token = server.token(user or "anonymous", access)
                body = json.dumps({"token": token, "access_token": token, "expires_in": server.token_lifetime})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

        return Handler
