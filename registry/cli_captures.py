"""``edge-registry captures collect|pull``: frames from the fleet, for retraining."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import click

from registry.captures import collect_command, pull_captures
from registry.cli_options import broker_option, current_login, store_option
from registry.rollout import Controller
from registry.store import open_store
from release_contract.capture_artifact import CAPTURES_REPO
from release_contract.collect import CAPTURES_DIR
from release_contract.exits import USAGE, UserError
from release_contract.signing import load_private_key
from release_contract.stores import store_kind
from release_contract.topics import collect_device_topic, collect_fleet_topic

MAX_EXPIRES_HOURS = 24 * 30


def _since(value: Optional[str]) -> int:
    """``--since`` (ISO 8601; UTC unless it says otherwise) as seconds since the epoch; 0 without it."""
    if not value:
        return 0
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(
            f"--since {value!r} is not a date or time such as 2026-11-20 or 2026-11-20T08:00", USAGE
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0, int(moment.timestamp()))


@click.group()
def captures() -> None:
    """Frames the devices kept for retraining (edge-agent --capture-dir)."""


@captures.command()
@click.option("--fleet", default=None, help="ask every device of this fleet")
@click.option("--device", default=None, help="ask one device")
@click.option("--key", type=click.Path(path_type=Path), required=True, help="signing.key: devices obey signed commands")
@click.option("--since", default=None, help="captures taken at or after this time (ISO 8601, UTC); default: all")
@click.option(
    "--max-mb",
    type=click.FloatRange(0, 1 << 20, min_open=True),
    default=100.0,
    show_default=True,
    help="at most this much per device",
)
@click.option(
    "--expires-hours",
    type=click.FloatRange(0, MAX_EXPIRES_HOURS, min_open=True),
    default=24.0,
    show_default=True,
    help="devices that are offline longer than this do not upload",
)
@click.option("--prefix", default="edgetpu", show_default=True, help="MQTT topic prefix")
@broker_option
@store_option
def collect(
    fleet: Optional[str],
    device: Optional[str],
    key: Path,
    since: Optional[str],
    max_mb: float,
    expires_hours: float,
    prefix: str,
    broker: Optional[str],
    store_url: Optional[str],
) -> None:
    """Send a signed collect command: the devices upload their captures to the store (a directory or
    an OCI registry, where devices need a login that may push: [capture] registry_username).

    \b
    Example:
      edge-registry captures collect --fleet farm --since 2026-11-20 --key keys/signing.key --store /srv/registry
    """
    if bool(fleet) == bool(device):
        raise click.UsageError("give exactly one of --fleet or --device")
    signing_key = load_private_key(key)
    store = open_store(store_url, current_login())
    command = collect_command(
        store.url,
        fleet=fleet,
        device=device,
        since=_since(since),
        max_bytes=int(max_mb * 1024 * 1024),
        expires_in=int(expires_hours * 3600),
    )
    topic = collect_fleet_topic(prefix, fleet) if fleet else collect_device_topic(prefix, device or "")
    controller = Controller(
        broker or os.environ.get("EDGE_REGISTRY_BROKER") or "mqtt://127.0.0.1:1883", None, Path(".")
    )
    controller.connect()
    try:
        controller.publish_retained(topic, command.sign(signing_key))
    finally:
        controller.close()
    where = (
        f"{store.url}/{CAPTURES_REPO}/<device>:{command.id}"
        if store_kind(store.url)[0] == "oci"
        else f"{store.url}/{CAPTURES_DIR}/<device>/{command.id}"
    )
    click.echo(f"sent {command.id} to {command.target}: uploads go to {where}")


@captures.command()
@click.option("--fleet", required=True, help="the fleet whose uploads to gather")
@click.option("--device", default=None, help="only this device's uploads")
@click.option("--to", "target", type=click.Path(path_type=Path, file_okay=False), required=True)
@store_option
def pull(fleet: str, device: Optional[str], target: Path, store_url: Optional[str]) -> None:
    """Gather the fleet's uploaded captures into TO: one folder per predicted label, images beside
    their JSON records. Relabel by moving files; `edge-compile quantize --calib TO` reads it as is.

    \b
    Example:
      edge-registry captures pull --fleet farm --to datasets/farm --store /srv/registry
    """
    store = open_store(store_url, current_login())
    try:
        result = pull_captures(store.url, fleet, target, device, login=current_login())
    except OSError as exc:
        raise UserError(f"cannot write to {target}: {exc.strerror or exc}") from exc
    click.echo(
        f"{result.copied} new captures from {result.batches} batches into {target} "
        f"({len(result.labels)} labels; {result.kept} already there)"
    )
    if result.refused:
        raise UserError(f"{len(result.refused)} files did not match their batch and were skipped (see warnings)")
