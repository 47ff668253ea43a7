"""``edge-registry``: push signed model releases, pull them, and roll them out to fleets.

Each command parses its options and calls the library; registry errors become one
line on stderr and a non-zero exit.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional

import click

from registry.release import build_manifest, find_release_files, push_release
from registry.rollout import CATEGORIES, Controller, RolloutState, load_state, new_rollout
from registry.store import open_store
from release_contract.errors import NotFound, RegistryError, RolloutError
from release_contract.exits import USAGE, MappedErrorsGroup, UserError
from release_contract.fetch import pull_release
from release_contract.manifest import parse_ref
from release_contract.signing import TrustedKeys, generate_keypair, load_private_key, verify_envelope
from release_contract.stores import open_source

#: Ten years: a release that never expires can be replayed forever.
MAX_EXPIRES_DAYS = 3650
STORE_HELP = "a directory or oci://host[:port]/repository (default: $EDGE_REGISTRY, else ./registry)"


class RegistryGroup(MappedErrorsGroup):
    """Registry errors become one line and their exit code (see :mod:`release_contract.exits`)."""

    roots = (RegistryError,)


store_option = click.option("--store", "store_url", default=None, metavar="PATH|oci://HOST/REPO",
                            help=STORE_HELP)


@click.group(cls=RegistryGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="more logging (-vv for debug)")
def main(verbose: int) -> None:
    """Signed model releases for Edge TPU fleets, and rollouts over MQTT.

    \b
    Examples:
      edge-registry keygen --out keys/
      edge-registry push build/digits --name digits --version 3 --key keys/signing.key
      edge-registry list --store oci://registry.local:5000/models
      edge-registry pull digits:3 --to /tmp/digits --trust keys/signing.pub
      edge-registry rollout digits:3 --fleet farm --canary 10 --key keys/signing.key
      edge-registry status
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


@main.command()
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True,
              help="folder for the key pair")
@click.option("--force", is_flag=True, help="overwrite an existing key pair")
def keygen(out_dir: Path, force: bool) -> None:
    """Create an ed25519 key pair: signing.key (keep it secret) and signing.pub (give it to devices).

    \b
    Example:
      edge-registry keygen --out keys/
    """
    priv, pub = generate_keypair(out_dir, overwrite=force)
    click.echo(f"wrote {priv} (secret) and {pub} (pin it on devices)")


@main.command()
@click.argument("model_dir", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="release name (lowercase: a-z 0-9 . _ -)")
@click.option("--version", "version", required=True,
              help="release version: dotted integers, higher than the last")
@click.option("--key", type=click.Path(path_type=Path), required=True, help="signing.key from keygen")
@click.option("--cpu-model", type=click.Path(path_type=Path),
              help="the plain int8 model (default: found in MODEL_DIR)")
@click.option("--edgetpu-model", type=click.Path(path_type=Path), help="the *_edgetpu.tflite model")
@click.option("--labels", type=click.Path(path_type=Path), help="labels file (default: MODEL_DIR/labels.txt)")
@click.option("--golden", type=click.Path(path_type=Path),
              help="raw input tensor bytes devices classify to validate")
@click.option("--golden-top1", type=int, help="class the golden input must yield")
@click.option("--input-shape", help="e.g. 1,224,224,3 (default: read from the CPU model)")
@click.option("--mean", type=float, default=None,
              help="input normalization mean, with --std (default: none, the model's input quantization covers it)")
@click.option("--std", type=float, default=None, help="input normalization std, with --mean")
@click.option("--min-runtime", type=int,
              help="minimum Edge TPU runtime (default: from the compile report, else 0)")
@click.option("--expires-days", type=float, default=365.0, show_default=True, help="manifest lifetime")
@store_option
def push(model_dir: Path, name: str, version: str, key: Path, cpu_model: Optional[Path],
         edgetpu_model: Optional[Path], labels: Optional[Path], golden: Optional[Path],
         golden_top1: Optional[int], input_shape: Optional[str], mean: Optional[float], std: Optional[float],
         min_runtime: Optional[int], expires_days: float,
         store_url: Optional[str]) -> None:
    """Sign the compiler's output folder MODEL_DIR as release NAME:VERSION and push it.

    \b
    Example:
      edge-registry push build/digits --name digits --version 3 --key keys/signing.key
    """
    signing_key = load_private_key(key)
    source = find_release_files(model_dir, cpu_model=cpu_model, labels=labels, edgetpu_model=edgetpu_model,
                                golden=golden)
    shape = None
    if input_shape:
        try:
            shape = [int(d) for d in input_shape.split(",")]
        except ValueError as exc:
            raise click.BadParameter("use comma-separated integers such as 1,224,224,3",
                                     param_hint="--input-shape") from exc
    if not (math.isfinite(expires_days) and 0 < expires_days <= MAX_EXPIRES_DAYS):
        raise UserError(f"--expires-days must be more than 0 and at most {MAX_EXPIRES_DAYS}, got {expires_days}",
                        USAGE)
    manifest = build_manifest(name, version, source, input_shape=shape, mean=mean, std=std,
                              min_runtime=min_runtime, expires_days=expires_days, golden_top1=golden_top1)
    store = open_store(store_url)
    push_release(store, manifest, source, signing_key)
    click.echo(f"pushed {manifest.ref} ({manifest.total_size} bytes, {len(manifest.files)} files) "
               f"to {store.url}")


@main.command(name="list")
@click.argument("name", required=False)
@store_option
def list_cmd(name: Optional[str], store_url: Optional[str]) -> None:
    """List releases (all, or the versions of NAME) with their channels.

    \b
    Example:
      edge-registry list digits --store ./registry
    """
    rows = open_store(store_url).list(name)
    if not rows:
        click.echo("no releases")
    for info in rows:
        flags = ", ".join(info.channels + (["yanked"] if info.yanked else []))
        click.echo(f"{info.name}:{info.version}" + (f"  [{flags}]" if flags else ""))


@main.command()
@click.argument("ref", metavar="NAME[:VERSION|:canary|:stable]")
@store_option
def show(ref: str, store_url: Optional[str]) -> None:
    """Print the manifest of a release (default: its newest version that is not yanked).

    \b
    Example:
      edge-registry show digits:3
    """
    name, _, tag = ref.partition(":")
    store = open_store(store_url)
    version = store.resolve(name, tag or None)
    signed = json.loads(store.envelope(name, version))
    click.echo(json.dumps(signed, indent=2, sort_keys=True))


@main.command()
@click.argument("ref", metavar="NAME:VERSION")
@click.option("--to", "target", type=click.Path(path_type=Path), required=True, help="folder to create")
@click.option("--trust", type=click.Path(path_type=Path), multiple=True, required=True,
              help="trusted signing.pub (or a folder of *.pub); repeatable")
@click.option("--runtime", type=int, help="refuse releases needing a newer Edge TPU runtime than this")
@store_option
def pull(ref: str, target: Path, trust: List[Path], runtime: Optional[int], store_url: Optional[str]) -> None:
    """Download NAME:VERSION into a new folder, verifying everything before writing to it.

    \b
    Example:
      edge-registry pull digits:3 --to /tmp/digits --trust keys/signing.pub
    """
    name, version = parse_ref(ref)
    trusted = TrustedKeys.from_paths(trust)
    store = open_store(store_url)
    version = store.resolve(name, version) if version is None else version
    if target.exists() and any(target.iterdir()):
        raise UserError(f"{target} exists and is not empty")
    if target.exists():
        target.rmdir()
    work = target.parent / f".{target.name}.download"
    manifest = verify_envelope(open_source(store.url).fetch_envelope(name, version), trusted)
    from tqdm import tqdm

    with tqdm(total=manifest.total_size, unit="B", unit_scale=True, desc=f"{name}:{version}",
              disable=not sys.stderr.isatty()) as bar:
        result = pull_release(open_source(store.url), name, version, trusted, target, work,
                              runtime_version=runtime, progress=bar.update)
    shutil.rmtree(work, ignore_errors=True)
    click.echo(f"verified and wrote {result.manifest.ref} to {target}")


@main.command()
@click.argument("ref", metavar="NAME:VERSION")
@click.option("--channel", type=click.Choice(["canary", "stable"]), required=True)
@store_option
def promote(ref: str, channel: str, store_url: Optional[str]) -> None:
    """Point a channel (canary or stable) of NAME at VERSION.

    \b
    Example:
      edge-registry promote digits:3 --channel stable
    """
    name, version = _full_ref(ref)
    open_store(store_url).set_channel(name, version, channel)
    click.echo(f"{name}:{channel} -> {version}")


@main.command()
@click.argument("ref", metavar="NAME:VERSION")
@store_option
def yank(ref: str, store_url: Optional[str]) -> None:
    """Withdraw NAME:VERSION: no channel points at it, `show NAME` skips it. Devices keep it until told.

    \b
    Example:
      edge-registry yank digits:3
    """
    name, version = _full_ref(ref)
    open_store(store_url).yank(name, version)
    click.echo(f"yanked {name}:{version}")


def _full_ref(ref: str) -> tuple[str, str]:
    name, version = parse_ref(ref)
    if version is None:
        raise click.BadParameter("give NAME:VERSION", param_hint="REF")
    return name, version


def _state_dir(value: Optional[str]) -> Path:
    return Path(value or os.environ.get("EDGE_REGISTRY_STATE") or ".edge-registry")


state_option = click.option("--state-dir", default=None, metavar="DIR",
                            help="where rollouts are recorded "
                                 "(default: $EDGE_REGISTRY_STATE, else ./.edge-registry)")
broker_option = click.option("--broker", default=None, metavar="mqtt://HOST:PORT",
                             help="MQTT broker (default: $EDGE_REGISTRY_BROKER, else mqtt://127.0.0.1:1883)")


@main.command()
@click.argument("ref", metavar="NAME:VERSION|NAME:stable", required=False)
@click.option("--fleet", help="devices whose retained <prefix>/<device>/model names this fleet")
@click.option("--devices", help="comma-separated device ids (instead of --fleet)")
@click.option("--canary", "canary_pct", type=float, default=10.0, show_default=True,
              help="% of devices in wave 1")
@click.option("--wave-size", type=int, default=50, show_default=True, help="devices per later wave")
@click.option("--abort-above", "abort_above", type=float, default=10.0, show_default=True,
              help="abort and roll back when more than this % of touched devices fail")
@click.option("--wave-timeout", type=float, default=600.0, show_default=True,
              help="seconds a wave may take; silent devices then count as failed")
@click.option("--key", type=click.Path(path_type=Path), help="signing.key: commands are signed")
@click.option("--prefix", default="edgetpu", show_default=True, help="MQTT topic prefix")
@click.option("--resume", "resume_id", metavar="ID", help="continue an interrupted rollout (ID or 'last')")
@broker_option
@state_option
@store_option
def rollout(ref: Optional[str], fleet: Optional[str], devices: Optional[str], canary_pct: float,
            wave_size: int, abort_above: float, wave_timeout: float, key: Optional[Path], prefix: str,
            resume_id: Optional[str], broker: Optional[str], state_dir: Optional[str],
            store_url: Optional[str]) -> None:
    """Roll NAME:VERSION out over MQTT in waves; abort and roll back past the failure threshold.

    \b
    Examples:
      edge-registry rollout digits:3 --fleet farm --canary 10 --wave-size 50 --key keys/signing.key
      edge-registry rollout digits:3 --devices cam-1,cam-2 --abort-above 0 --key keys/signing.key
      edge-registry rollout --resume last --key keys/signing.key
    """
    if key is None:
        raise click.UsageError("--key is required: devices only accept signed commands")
    folder = _state_dir(state_dir)
    controller = Controller(broker or os.environ.get("EDGE_REGISTRY_BROKER") or "mqtt://127.0.0.1:1883",
                            load_private_key(key), folder)
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
        store = open_store(store_url)
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
            targets = [d.strip() for d in (devices or "").split(",") if d.strip()] if devices else \
                controller.discover(prefix, fleet or "")
            rollout_id = f"{name}-{version}-{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}"
            state = new_rollout(rollout_id, name, version, store.url, prefix, fleet or "", targets,
                                canary_pct, wave_size, abort_above, wave_timeout)
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
        if info.get("state") in ("rejected", "failed", "timed_out") or info.get("reason") and \
                info.get("state") == "rolled_back":
            click.echo(f"  {device}: {info.get('state')}: {info.get('reason', '')}")


@main.command()
@click.argument("rollout_id", required=False, metavar="[ID]")
@state_option
def status(rollout_id: Optional[str], state_dir: Optional[str]) -> None:
    """Show where a rollout stands (default: the latest one).

    \b
    Example:
      edge-registry status
    """
    try:
        state = load_state(_state_dir(state_dir), rollout_id)
    except RolloutError as exc:
        raise UserError(str(exc)) from exc
    _report(state)


if __name__ == "__main__":
    main()
