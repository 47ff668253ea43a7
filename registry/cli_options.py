"""Options and argument rules shared by the ``edge-registry`` commands."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import click

from release_contract.manifest import parse_ref

STORE_HELP = "a directory or oci://host[:port]/repository (default: $EDGE_REGISTRY, else ./registry)"

store_option = click.option("--store", "store_url", default=None, metavar="PATH|oci://HOST/REPO", help=STORE_HELP)


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
