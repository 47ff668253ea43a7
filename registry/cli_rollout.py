"""``edge-registry rollout`` and ``edge-registry status``: canary waves over MQTT, and where they stand."""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import click

from registry.cli_options import broker_option, current_login, state_dir_path, state_option, store_option
from registry.rollout import CATEGORIES, Controller, RolloutState, load_state, new_rollout
from registry.rollout_state import DEFAULT_COMMAND_TTL
from registry.store import open_store
from release_contract.errors import NotFound, RolloutError
from release_contract.exits import UserError
from release_contract.signing import load_private_key


@click.command()
@click.argument("ref", metavar="NAME:VERSION|NAME:stable", required=False)
@click.option("--fleet", help="devices whose retained <prefix>/<device>/model names this fleet")
@click.option("--devices", help="comma-separated device ids (instead of --fleet)")
@click.option("--canary", "canary_pct", type=float, default=10.0, show_default=True, help="% of devices in wave 1")
@click.option("--wave-size", type=int, default=50, show_default=True, help="devices per later wave")
@click.option(
    "--abort-above",
    "abort_above",
    type=float,
    default=10.0,
    show_default=True,
    help="abort and roll back when more than this % of touched devices fail",
)
@click.option(
    "--wave-timeout",
    type=float,
    default=600.0,
    show_default=True,
    help="seconds a wave may take; silent devices then count as failed",
)
@click.option(
    "--command-ttl",
    type=click.FloatRange(min=60, max=90 * 86400),
    default=DEFAULT_COMMAND_TTL,
    show_default=True,
    help="seconds a signed command stays valid; devices refuse it afterwards",
)
@click.option("--allow-downgrade", is_flag=True, help="let devices install a version below one they have installed")
@click.option("--allow-model-change", is_flag=True, help="let devices running another model switch to this one")
@click.option("--key", type=click.Path(path_type=Path), help="signing.key: commands are signed")
@click.option("--prefix", default="edgetpu", show_default=True, help="MQTT topic prefix")
@click.option("--resume", "resume_id", metavar="ID", help="continue an interrupted rollout (ID or 'last')")
@broker_option
@state_option
@store_option
def rollout(
    ref: Optional[str],
    fleet: Optional[str],
    devices: Optional[str],
    canary_pct: float,
    wave_size: int,
    abort_above: float,
    wave_timeout: float,
    command_ttl: float,
    allow_downgrade: bool,
    allow_model_change: bool,
    key: Optional[Path],
    prefix: str,
    resume_id: Optional[str],
    broker: Optional[str],
    state_dir: Optional[str],
    store_url: Optional[str],
) -> None:
    """Roll NAME:VERSION out over MQTT in waves; abort and roll back past the failure threshold.

    \b
    Examples:
      edge-registry rollout digits:3 --fleet farm --canary 10 --wave-size 50 --key keys/signing.key
      edge-registry rollout digits:3 --devices cam-1,cam-2 --abort-above 0 --key keys/signing.key
      edge-registry rollout --resume last --key keys/signing.key
      edge-registry rollout other:1 --devices cam-1 --allow-model-change --key keys/signing.key
    """
    if key is None:
        raise click.UsageError("--key is required: devices only accept signed commands")
    folder = state_dir_path(state_dir)
    controller = Controller(
        broker or os.environ.get("EDGE_REGISTRY_BROKER") or "mqtt://127.0.0.1:1883", load_private_key(key), folder
    )
    if resume_id:
        state = load_state(folder, None if resume_id == "last" else resume_id)
        if state.status in ("succeeded", "aborted"):
            raise UserError(f"rollout {state.id} already {state.status}")
    else:
        if not ref or bool(fleet) == bool(devices):
            raise click.UsageError("give NAME:VERSION and exactly one of --fleet or --devices")
        name, _, tag = ref.partition(":")
        if not tag:
            raise click.BadParameter("give NAME:VERSION, NAME:canary or NAME:stable", param_hint="REF")
        store = open_store(store_url, current_login())
        try:
            version = store.resolve(name, tag)
        except NotFound as exc:
            raise UserError(f"{exc}: push it first") from exc
        if version in store.yanked(name):
            raise UserError(f"{name}:{version} is yanked: it cannot be rolled out")
        state = None
    controller.connect()
    try:
        if state is None:
            targets = (
                [d.strip() for d in (devices or "").split(",") if d.strip()]
                if devices
                else controller.discover(prefix, fleet or "")
            )
            rollout_id = f"{name}-{version}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}"
            state = new_rollout(
                rollout_id,
                name,
                version,
                store.url,
                prefix,
                fleet or "",
                targets,
                canary_pct,
                wave_size,
                abort_above,
                wave_timeout,
                command_ttl=command_ttl,
                allow_downgrade=allow_downgrade,
                allow_model_change=allow_model_change,
            )
            click.echo(f"rollout {state.id}: {len(targets)} devices in {len(state.waves)} waves")
        final = _run_with_progress(controller, state)
    finally:
        controller.close()
    _report(final)
    if final.status != "succeeded":
        raise UserError(f"rollout {final.id} {final.status}: {final.reason}")


def _run_with_progress(controller: Controller, state: RolloutState) -> RolloutState:
    from tqdm import tqdm

    bar = tqdm(total=len(state.devices), unit="dev", desc=state.id, disable=not sys.stderr.isatty())

    def update(s: RolloutState) -> None:
        counts = s.counts()
        done = counts["active"] + counts["failed"] + counts["rolled_back"]
        bar.n = done
        text = " ".join(f"{c}={counts[c]}" for c in CATEGORIES)
        bar.set_postfix_str(f"{text} wave={s.wave + 1}", refresh=True)

    controller.on_change = update
    try:
        return controller.run(state)
    finally:
        bar.close()


def _report(state: RolloutState) -> None:
    counts = state.counts()
    took = (state.finished_at or time.time()) - state.started_at
    wave = min(state.wave + 1, len(state.waves))
    click.echo(f"rollout {state.id}: {state.status} after {took:.1f} s; wave {wave} of {len(state.waves)}")
    click.echo("  " + "  ".join(f"{c}: {counts[c]}" for c in CATEGORIES))
    if state.reason:
        click.echo(f"  reason: {state.reason}")
    for device in state.devices:
        info = state.devices_state.get(device, {})
        if (
            info.get("state") in ("rejected", "failed", "timed_out")
            or info.get("reason")
            and info.get("state") == "rolled_back"
        ):
            click.echo(f"  {device}: {info.get('state')}: {info.get('reason', '')}")


@click.command()
@click.argument("rollout_id", required=False, metavar="[ID]")
@state_option
def status(rollout_id: Optional[str], state_dir: Optional[str]) -> None:
    """Show where a rollout stands (default: the latest one).

    \b
    Example:
      edge-registry status
    """
    try:
        state = load_state(state_dir_path(state_dir), rollout_id)
    except RolloutError as exc:
        raise UserError(str(exc)) from exc
    _report(state)
