"""A small HTTP client for the OCI distribution API, shared by devices and ``edge-registry``.

It answers the registry's ``WWW-Authenticate`` challenges the standard way:

* ``Basic``: resend with the credentials (self-hosted distribution behind htpasswd, ECR, Artifactory);
* ``Bearer realm=... service=... scope=...``: fetch a token from the realm (the distribution token
  spec that GHCR, Docker Hub, Harbor and Quay use) with the credentials as Basic auth (or
  anonymously), cache it per scope until it expires, and resend with it.

Each request is answered at most twice (once unauthenticated or with a cached token, once after
the challenge): a refused login is one :class:`AuthError`, never a retry storm. Every socket
operation has a timeout, every body read is capped, redirects (blob storage on S3 or a CDN) are
followed at most 5 times and never carry the registry's credentials to another host, and a
realm only receives the password over HTTPS, on loopback or on the registry's own host.

Errors: :class:`AuthError` (401/403), :class:`NotFound` (404 via :func:`expect`),
:class:`DownloadError` (unreachable, timed out, any other status), :class:`StoreError` (a body
that is not the JSON the API promises, e.g. an HTML page).
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import IO, Any, Dict, Iterable, Optional, Tuple, Union

from release_contract.credentials import Credentials, Login
from release_contract.errors import AuthError, DownloadError, NotFound, StoreError

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
MAX_TOKEN_BYTES = 1 << 16
Body = Union[bytes, IO[bytes], None]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Hand 3xx answers back: :class:`RegistryClient` follows them itself, without credentials off-host."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def read_capped(fh: IO[bytes], cap: int, what: str) -> bytes:
    """At most ``cap`` bytes of ``fh``; :class:`DownloadError` when there are more."""
    try:
        data = fh.read(cap + 1)
    except (TimeoutError, OSError) as exc:
        raise DownloadError(f"reading {what} failed: {exc}") from exc
    if len(data) > cap:
        raise DownloadError(f"{what} is larger than {cap} bytes: refusing it")
    return data


def read_json(resp: Any, cap: int, what: str) -> Any:
    """The JSON body of ``resp`` (at most ``cap`` bytes); one clear :class:`StoreError` when it is not JSON."""
    ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    return parse_json(read_capped(resp, cap, what), what, ctype)


def parse_json(raw: bytes, what: str, ctype: str = "") -> Any:
    """``raw`` as JSON; a :class:`StoreError` naming ``what`` (an HTML page, or not JSON) otherwise."""
    try:
        return json.loads(raw)
    except ValueError as exc:
        kind = "an HTML page" if ctype == "text/html" or raw.lstrip()[:1] == b"<" else "something that is not JSON"
        raise StoreError(f"{what}: the server answered {kind}, not the OCI distribution API") from exc


def expect(resp: Any, ok: Iterable[int], what: str) -> Any:
    """``resp`` when its status is in ``ok``; else close it and raise NotFound (404) or DownloadError."""
    status = resp.status
    if status in tuple(ok):
        return resp
    detail = _error_detail(resp)
    resp.close()
    if status == 404:
        raise NotFound(f"{what}: not found{detail}")
    raise DownloadError(f"{what}: the registry answered HTTP {status}{detail}")


def _error_detail(resp: Any) -> str:
    # distribution's error body: {"errors": [{"code": ..., "message": ...}]}; anything else is ignored
    try:
        body = json.loads(resp.read(4096))
        err = body["errors"][0]
        return f" ({str(err.get('code', ''))[:40]}: {' '.join(str(err.get('message', '')).split())[:160]})"
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, OSError):
        return ""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (no port) is this machine: the one place plain HTTP is assumed safe."""
    return host in ("localhost", "::1") or host.startswith("127.")


def _challenge(header: str) -> Tuple[str, Dict[str, str]]:
    """``Bearer realm="x",service="y"`` -> (``bearer``, {realm: x, service: y})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', rest))


class RegistryClient:
    """Requests to one registry (``base`` = ``http[s]://host[:port]``) with Basic or Bearer auth.

    ``login`` (:class:`~release_contract.credentials.Login`) is resolved for this host on the first
    challenge; ``timeout`` bounds every connect and read in seconds. Not thread-safe: use one per thread.
    """

    def __init__(self, base: str, login: Optional[Login] = None, timeout: float = 10.0) -> None:
        self.base = base.rstrip("/")
        self.host = urllib.parse.urlsplit(self.base).netloc
        self.timeout = timeout
        self._login = login
        self._creds: Optional[Credentials] = None
        self._creds_known = False
        self._basic = False
        self._tokens: Dict[str, Tuple[str, float]] = {}
        self._opener = urllib.request.build_opener(_NoRedirect())

    # -- public --------------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        scope: str,
        headers: Optional[Dict[str, str]] = None,
        data: Body = None,
    ) -> Any:
        """Send ``method path`` (``/v2/...`` or an absolute URL on the registry) and return the response.

        ``scope`` is the token scope the request needs (``repository:<name>:pull`` or ``:pull,push``,
        ``registry:catalog:*``). The response is returned for every status except 401/403, which
        raise :class:`AuthError`; the caller closes it (use :func:`expect`).
        """
        url = path if path.startswith(("http://", "https://")) else self.base + path
        for attempt in range(2):
            hdrs = dict(headers or {})
            auth = self._auth_header(scope)
            if auth:
                hdrs["Authorization"] = auth
            if attempt and hasattr(data, "seek"):
                data.seek(0)  # type: ignore[union-attr]
            resp = self._send(method, url, hdrs, data)
            if resp.status == 401 and attempt == 0:
                header = resp.headers.get("WWW-Authenticate", "")
                resp.close()
                self._answer(header, scope, had_auth=bool(auth))
                continue
            if resp.status in (401, 403):
                resp.close()
                who = self._who()
                raise AuthError(
                    f"{self.host} refused {method} {urllib.parse.urlsplit(url).path} for {who}"
                    + (": the login has no permission for it" if resp.status == 403 else "")
                )
            return resp
        raise AssertionError("unreachable")  # pragma: no cover

    # -- authentication --------------------------------------------------------------------------------
    def _credentials(self) -> Optional[Credentials]:
        if not self._creds_known:
            self._creds = self._login.for_host(self.host) if self._login else None
            self._creds_known = True
        return self._creds

    def _who(self) -> str:
        creds = self._credentials()
        if creds is None:
            return "an anonymous client: log in (--username with --password-stdin, or EDGE_REGISTRY_USERNAME/_PASSWORD)"
        return f"user {creds.username!r} (login from {creds.source})"

    def _auth_header(self, scope: str) -> Optional[str]:
        token = self._tokens.get(scope)
        if token and token[1] > time.monotonic():
            return f"Bearer {token[0]}"
        if self._basic:
            creds = self._credentials()
            return creds.basic() if creds else None
        return None

    def _answer(self, header: str, scope: str, had_auth: bool) -> None:
        scheme, params = _challenge(header)
        if scheme == "basic":
            if self._credentials() is None or (had_auth and self._basic):
                raise AuthError(f"{self.host} needs a login and refused {self._who()}")
            self._basic = True
            return
        if scheme == "bearer" and params.get("realm"):
            self._tokens.pop(scope, None)
            self._fetch_token(params, scope)
            return
        raise AuthError(f"{self.host} asked for a login it does not describe (WWW-Authenticate: {header[:80]!r})")

    def _fetch_token(self, params: Dict[str, str], scope: str) -> None:
        realm = params["realm"]
        parts = urllib.parse.urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise AuthError(f"{self.host} named a token server that is not an http(s) URL: {realm[:80]!r}")
        scopes = [scope] + ([params["scope"]] if params.get("scope") and params["scope"] != scope else [])
        query = [("service", params["service"])] if params.get("service") else []
        query += [("scope", s) for s in scopes]
        sep = "&" if parts.query else "?"
        url = realm + (sep + urllib.parse.urlencode(query) if query else "")
        hdrs: Dict[str, str] = {}
        creds = self._credentials()
        if creds is not None:
            if parts.scheme != "https" and parts.netloc != self.host and not is_loopback(parts.hostname or ""):
                raise AuthError(f"refusing to send the login for {self.host} to {parts.netloc} over plain HTTP")
            hdrs["Authorization"] = creds.basic()
        resp = self._send("GET", url, hdrs, None)
        if resp.status in (401, 403):
            resp.close()
            raise AuthError(f"the token server {parts.netloc} of {self.host} refused {self._who()}")
        expect(resp, (200,), f"token from {parts.netloc}")
        with resp:
            body = read_json(resp, MAX_TOKEN_BYTES, f"the token server {parts.netloc}")
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token or any(c in token for c in "\r\n "):
            raise AuthError(f"the token server {parts.netloc} of {self.host} answered without a token")
        try:
            lifetime = max(float(body.get("expires_in", 60)), 1.0)
        except (TypeError, ValueError):
            lifetime = 60.0
        self._tokens[scope] = (token, time.monotonic() + lifetime - min(5.0, lifetime / 2))

    # -- transport -----------------------------------------------------------------------------------
    def _send(self, method: str, url: str, headers: Dict[str, str], data: Body) -> Any:
        origin = urllib.parse.urlsplit(url).netloc
        for _ in range(MAX_REDIRECTS + 1):
            parts = urllib.parse.urlsplit(url)
            if parts.scheme not in ("http", "https"):
                raise DownloadError(f"{self.host} redirected to a URL that is not http(s): {url[:80]!r}")
            hdrs = headers if parts.netloc == origin else {k: v for k, v in headers.items() if k != "Authorization"}
            req = urllib.request.Request(url, data=data, headers=hdrs, method=method)  # noqa: S310 (scheme checked)
            try:
                resp: Any = self._opener.open(req, timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                resp = exc
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", None) or exc
                if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                    reason = f"no answer within {self.timeout:.0f} s"
                raise DownloadError(f"cannot reach the registry at {parts.scheme}://{parts.netloc}: {reason}") from exc
            if resp.status in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
                if method not in ("GET", "HEAD"):
                    return resp  # an upload that moves: the caller decides
                url = urllib.parse.urljoin(url, resp.headers["Location"])
                resp.close()
                continue
            return resp
        raise DownloadError(f"{self.host} redirected more than {MAX_REDIRECTS} times")
