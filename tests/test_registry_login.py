"""Registries that need a login: htpasswd (Basic) and the distribution token spec (Bearer).

A real ``docker-registry`` runs behind each; the token endpoint is ``helpers.token_server``.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, Tuple

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers.fleet import make_release_dir, push_version
from helpers.registry_server import RegistryServer, htpasswd_auth
from helpers.token_server import TokenServer

from edge_agent.config import UpdatesConfig
from edge_agent.errors import ConfigError
from registry.cli import main
from registry.store import open_store
from release_contract.credentials import Login
from release_contract.errors import AuthError
from release_contract.fetch import pull_release
from release_contract.signing import TrustedKeys, generate_keypair, load_private_key
from release_contract.stores import OciSource, open_source

USERS = {"ci": "push-secret", "device": "pull-secret"}


@pytest.fixture
def keys(tmp_path: Path) -> Tuple[Ed25519PrivateKey, Path]:
    priv, pub = generate_keypair(tmp_path / "keys")
    return load_private_key(priv), pub


@pytest.fixture
def basic_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    server = RegistryServer(tmp_path / "oci", auth=htpasswd_auth(tmp_path / "auth", USERS)).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[TokenServer]:
    tokens = TokenServer(tmp_path / "tokens", USERS, read_only={"device"}).start()
    try:
        yield tokens
    finally:
        tokens.stop()


@pytest.fixture
def token_registry(tmp_path: Path, token_server: TokenServer) -> Iterator[RegistryServer]:
    server = RegistryServer(tmp_path / "oci", auth=token_server.registry_auth()).start()
    try:
        yield server
    finally:
        server.stop()


def cli(*args: str, stdin: str = "", env: Dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin, env=env, catch_exceptions=False)


def one_line_error(res: Result) -> str:
    lines = res.output.strip().splitlines()
    assert res.exit_code != 0
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    assert "Traceback" not in res.output
    return lines[0]


def push_and_manage(tmp_path: Path, url: str, key_dir: Path, login: Tuple[str, ...], stdin: str) -> None:
    """The operator's whole round: push two versions, list, show, promote, yank."""
    folder = make_release_dir(tmp_path / "build")
    for version in ("1", "2"):
        res = cli(
            "push",
            str(folder),
            "--name",
            "digits",
            "--version",
            version,
            "--key",
            str(key_dir / "signing.key"),
            "--store",
            url,
            *login,
            stdin=stdin,
        )
        assert res.exit_code == 0, res.output
    for channel, version in (("canary", "2"), ("stable", "1")):
        res = cli("promote", f"digits:{version}", "--channel", channel, "--store", url, *login, stdin=stdin)
        assert res.exit_code == 0, res.output
    assert cli("yank", "digits:2", "--store", url, *login, stdin=stdin).exit_code == 0
    assert cli("list", "--store", url, *login, stdin=stdin).output.splitlines() == [
        "digits:1  [stable]",
        "digits:2  [yanked]",
    ]
    shown = json.loads(cli("show", "digits", "--store", url, *login, stdin=stdin).output)
    assert shown["signed"]["version"] == "1"


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_operator_commands_and_device_pull_work_behind_a_login(
    tmp_path: Path, request: pytest.FixtureRequest, mode: str
) -> None:
    server: RegistryServer = request.getfixturevalue(f"{mode}_registry")
    url = server.store_url("models")
    assert cli("keygen", "--out", str(tmp_path / "k")).exit_code == 0
    push_and_manage(tmp_path, url, tmp_path / "k", ("--username", "ci", "--password-stdin"), "push-secret\n")
    device = OciSource(url, timeout=10, login=Login(username="device", password="pull-secret"))
    trusted = TrustedKeys.from_paths([tmp_path / "k" / "signing.pub"])
    result = pull_release(device, "digits", "1", trusted, tmp_path / "out", tmp_path / "work")
    assert (tmp_path / "out" / "labels.txt").read_bytes() == (tmp_path / "build" / "labels.txt").read_bytes()
    assert result.bytes_downloaded == result.manifest.total_size


def test_the_environment_and_the_docker_config_give_the_login(
    tmp_path: Path, basic_registry: RegistryServer, keys: Tuple[Ed25519PrivateKey, Path]
) -> None:
    url = basic_registry.store_url("models")
    env = {"EDGE_REGISTRY_USERNAME": "ci", "EDGE_REGISTRY_PASSWORD": "push-secret"}
    assert cli("list", "--store", url, env=env).output.strip() == "no releases"
    config = tmp_path / "docker"
    config.mkdir()
    auth = base64.b64encode(b"ci:push-secret").decode()
    (config / "config.json").write_text(json.dumps({"auths": {basic_registry.host: {"auth": auth}}}))
    push_version(open_store(url, Login(docker_config=config)), keys[0], make_release_dir(tmp_path / "b"), "1")
    assert cli("list", "--store", url, env={"DOCKER_CONFIG": str(config)}).output.strip() == "digits:1"


def test_a_credential_helper_named_by_the_docker_config_gives_the_login(
    tmp_path: Path, basic_registry: RegistryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-edgetest"
    helper.write_text(
        "#!/bin/sh\nread host\n"
        f'[ "$host" = "{basic_registry.host}" ] || {{ echo "credentials not found in native keychain"; exit 1; }}\n'
        'echo \'{"ServerURL": "x", "Username": "ci", "Secret": "push-secret"}\'\n'
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"credHelpers": {basic_registry.host: "edgetest"}}))
    res = cli("list", "--store", basic_registry.store_url("models"), env={"DOCKER_CONFIG": str(config)})
    assert res.exit_code == 0 and res.output.strip() == "no releases", res.output


def test_a_read_only_device_login_cannot_push(
    tmp_path: Path, token_registry: RegistryServer, keys: Tuple[Ed25519PrivateKey, Path]
) -> None:
    store = open_store(token_registry.store_url("models"), Login(username="device", password="pull-secret"))
    with pytest.raises(AuthError, match="refused"):
        push_version(store, keys[0], make_release_dir(tmp_path / "b"), "1")


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_wrong_credentials_are_one_line_without_a_retry_storm(
    tmp_path: Path, request: pytest.FixtureRequest, mode: str
) -> None:
    server: RegistryServer = request.getfixturevalue(f"{mode}_registry")
    url = server.store_url("models")
    res = cli("list", "--store", url, "--username", "ci", "--password-stdin", stdin="wrong\n")
    line = one_line_error(res)
    assert "refused" in line and "ci" in line and "wrong" not in line
    if mode == "token":
        assert request.getfixturevalue("token_server").requests == 1  # asked once, not again and again


def test_no_login_for_a_registry_that_needs_one_says_how_to_give_it(basic_registry: RegistryServer) -> None:
    line = one_line_error(cli("list", "--store", basic_registry.store_url("models")))
    assert "--username" in line and "EDGE_REGISTRY_USERNAME" in line


def test_expired_tokens_are_one_line(tmp_path: Path) -> None:
    tokens = TokenServer(tmp_path / "tokens", USERS, token_lifetime=-120).start()
    try:
        with RegistryServer(tmp_path / "oci", auth=tokens.registry_auth()) as server:
            login = ("--username", "ci", "--password-stdin")
            res = cli("list", "--store", server.store_url("m"), *login, stdin="push-secret")
            assert "refused" in one_line_error(res)
            assert tokens.requests <= 2
    finally:
        tokens.stop()


class _HtmlHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html><body>Welcome to our login portal</body></html>")


def test_a_server_that_answers_html_is_one_line() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HtmlHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        line = one_line_error(cli("list", "--store", f"oci://127.0.0.1:{server.server_address[1]}/models"))
        assert "HTML page" in line
    finally:
        server.shutdown()
        server.server_close()


def test_a_registry_that_never_answers_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        line = one_line_error(cli("list", "--store", f"oci://127.0.0.1:{silent.getsockname()[1]}/models"))
    assert "no answer within 10 s" in line


def test_an_unreachable_registry_is_one_line() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert "cannot reach the registry" in one_line_error(cli("list", "--store", f"oci://127.0.0.1:{port}/models"))


def test_a_docker_config_that_is_not_json_is_one_line(tmp_path: Path, basic_registry: RegistryServer) -> None:
    (tmp_path / "config.json").write_text("{ not json")
    res = cli("list", "--store", basic_registry.store_url("models"), env={"DOCKER_CONFIG": str(tmp_path)})
    assert "not valid JSON" in one_line_error(res) and res.exit_code == 2


def test_a_failing_credential_helper_is_one_line_and_hides_its_output(
    tmp_path: Path, basic_registry: RegistryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    helper = tmp_path / "docker-credential-broken"
    helper.write_text("#!/bin/sh\necho 'token=hunter2 is invalid' >&2\nexit 3\n")
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "config.json").write_text(json.dumps({"credsStore": "broken"}))
    res = cli("list", "--store", basic_registry.store_url("models"), env={"DOCKER_CONFIG": str(tmp_path)})
    line = one_line_error(res)
    assert "docker-credential-broken failed" in line and "hunter2" not in line


def test_a_username_without_a_password_is_a_usage_error(basic_registry: RegistryServer) -> None:
    res = cli("list", "--store", basic_registry.store_url("models"), "--username", "ci")
    assert "--password-stdin" in one_line_error(res) and res.exit_code == 2


def test_a_device_pulls_with_the_read_only_login_from_its_updates_config(
    tmp_path: Path, token_registry: RegistryServer, keys: Tuple[Ed25519PrivateKey, Path]
) -> None:
    url = token_registry.store_url("models")
    push_version(
        open_store(url, Login(username="ci", password="push-secret")), keys[0], make_release_dir(tmp_path), "1"
    )
    (tmp_path / "registry.pass").write_text("pull-secret\n")
    updates = UpdatesConfig(registry_username="device", registry_password_file=tmp_path / "registry.pass")
    updates.validate()
    source = open_source(url, timeout=10, login=updates.registry_login())
    result = pull_release(source, "digits", "1", TrustedKeys.from_paths([keys[1]]), tmp_path / "out", tmp_path / "w")
    assert result.manifest.ref == "digits:1"
    assert "pull-secret" not in repr(updates.registry_login())


def test_a_device_username_without_its_password_file_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="registry_password_file"):
        UpdatesConfig(registry_username="device").validate()
