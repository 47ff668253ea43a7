"""Why a stream did not open: one short reason for the user, found by asking the server ourselves.

OpenCV only says that a capture did not open. :func:`explain_open_failure` connects to the
host (refused, unreachable, no answer), then asks an RTSP server ``DESCRIBE`` or an HTTP
server ``GET`` and reads the status line (401 wrong credentials, 404 no such stream). When the
server answers 200 the stream exists, so the failure was the content: a codec or format
that cannot be decoded. Credentials in the URL are never part of the reason.
"""

from __future__ import annotations

import base64
import socket
import ssl
from typing import Optional
from urllib.parse import unquote, urlsplit

DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443, "rtmp": 1935}


def _request(scheme: str, host: str, path: str, url_without_auth: str, auth: Optional[str]) -> bytes:
    header = f"Authorization: Basic {auth}\r\n" if auth else ""
    if scheme.startswith("rtsp"):
        return f"DESCRIBE {url_without_auth} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n{header}\r\n".encode()
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{header}Connection: close\r\n\r\n".encode()


def status_reason(code: int, has_credentials: bool) -> str:
    """The user-facing reason for a non-200 RTSP/HTTP status."""
    if code == 401:
        return "the server refused the credentials (401)" if has_credentials else "the server needs credentials (401)"
    if code == 403:
        return "access forbidden (403)"
    if code == 404:
        return "no such stream on the server (404)"
    return f"the server answered {code}"


def explain_open_failure(url: str, timeout: float = 5.0) -> str:
    """A one-line reason why ``url`` did not open; never raises, never contains credentials."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    try:
        port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        return "invalid port in the URL"
    if not host or not port:
        return "not a URL with a host"
    has_credentials = parts.username is not None
    auth = None
    if has_credentials:
        raw = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        auth = base64.b64encode(raw.encode()).decode()
    bare = parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]).geturl()
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:g} s"
    except ConnectionRefusedError:
        return f"connection refused by {host}:{port} (no server there?)"
    except socket.gaierror:
        return f"unknown host {host}"
    except OSError as exc:
        return f"cannot reach {host}:{port} ({exc.strerror or exc})"
    try:
        with sock:
            if scheme in ("https", "rtsps"):
                context = ssl.create_default_context()
                context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # only reading a status line
                sock = context.wrap_socket(sock, server_hostname=host)
            sock.settimeout(timeout)
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            sock.sendall(_request(scheme, host, path, bare, auth))
            answer = sock.recv(4096)
    except (OSError, ssl.SSLError) as exc:
        return f"{host}:{port} accepted the connection but did not answer ({exc.__class__.__name__})"
    first = answer.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    fields = first.split()
    if len(fields) < 2 or not fields[0].startswith(("RTSP/", "HTTP/")) or not fields[1].isdigit():
        return "the server's answer is not RTSP or HTTP (garbage, or the wrong port?)"
    code = int(fields[1])
    if code != 200:
        return status_reason(code, has_credentials)
    return "the stream exists but cannot be decoded (unsupported codec or format?)"
