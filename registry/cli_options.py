"""Options and argument rules shared by the ``edge-registry`` commands."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import click

from release_contract.credentials import Login
from release_contract.exits import USAGE, UserError
from release_contract.manifest import parse_ref

F = TypeVar("F", bound=Callable[..., Any])
MAX_PASSWORD = 64 * 1024

STORE_HELP = "a directory or oci://host[:port]/repository (default: $EDGE_REGISTRY, else ./registry)"


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    ctx.meta[f"edge_registry.{param.name}"] = value
    return value


def store_option(fn: F) -> F:
    """``--store`` plus the registry login options ``--username`` and ``--password-stdin``.

    The login is read by :func:`current_login`, so commands only take ``store_url``.
    """
    fn = click.option(
        "--password-stdin",
        is_flag=True,
        expose_value=False,
        callback=_remember,
        help="read the registry password (or token) from standard input, with --username",
    )(fn)
    fn = click.option(
        "--username",
        default=None,
        expose_value=False,
        callback=_remember,
        metavar="USER",
        help="registry login (default: $EDGE_REGISTRY_USERNAME/_PASSWORD, else the Docker config)",
    )(fn)
    return click.option("--store", "store_url", default=None, metavar="PATH|oci://HOST/REPO", help=STORE_HELP)(fn)


def current_login() -> Login:
    """The registry login of the running command: flags > environment > Docker config.

    ``--password-stdin`` reads one line (at most 64 KiB) once; it needs ``--username``.
    """
    ctx = click.get_current_context()
    if "edge_registry.login" not in ctx.meta:
        username = ctx.meta.get("edge_registry.username")
        password = None
        if ctx.meta.get("edge_registry.password_stdin"):
            if not username:
                raise UserError("--password-stdin needs --username", USAGE)
            password = sys.stdin.readline(MAX_PASSWORD + 1).rstrip("\r\n")
            if not password or len(password) > MAX_PASSWORD:
                raise UserError("--password-stdin: standard input holds no password (or one over 64 KiB)", USAGE)
        elif username:
            raise UserError("--username needs --password-stdin (the password is never a flag)", USAGE)
        ctx.meta["edge_registry.login"] = Login.from_environment(os.environ, username, password)
    login: Login = ctx.meta["edge_registry.login"]
    return login


def full_ref(ref: str) -> tuple[str, str]:
    """``NAME:VERSION`` -> (name, version); a usage error without a version."""
    name, version = parse_ref(ref)
    if version is None:
        raise click.BadParameter("give NAME:VERSION", param_hint="REF")
    return name, version


def state_dir_path(value: Optional[str]) -> Path:
    """Where rollouts are recorded: ``value``, else ``$EDGE_REGISTRY_STATE``, else ``./.edge-registry``."""
    return Path(value or os.environ.get("EDGE_REGISTRY_STATE") or ".edge-registry")


state_option = click.option(
    "--state-dir",
    default=None,
    metavar="DIR",
    help="where rollouts are recorded (default: $EDGE_REGISTRY_STATE, else ./.edge-registry)",
)
broker_option = click.option(
    "--broker",
    default=None,
    metavar="mqtt://HOST:PORT",
    help="MQTT broker (default: $EDGE_REGISTRY_BROKER, else mqtt://127.0.0.1:1883)",
)
