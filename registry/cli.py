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
from pathlib import Path
from typing import List, Optional

import click

from registry.cli_captures import captures
from registry.cli_options import broker_option, current_login, full_ref, store_option
from registry.cli_rollout import rollout, status
from registry.release import build_manifest, find_release_files, push_release
from registry.rollout import Controller
from registry.store import open_store
from release_contract.errors import ManifestError, RegistryError
from release_contract.exits import USAGE, MappedErrorsGroup, UserError
from release_contract.fetch import pull_release
from release_contract.manifest import MAX_ENVELOPE_BYTES, Manifest, canonical_json, parse_envelope, parse_ref
from release_contract.signing import TrustedKeys, generate_keypair, load_private_key, verify_envelope
from release_contract.stores import open_source
from release_contract.untrusted_json import loads_untrusted

#: Ten years: a release that never expires can be replayed forever.
MAX_EXPIRES_DAYS = 3650


class RegistryGroup(MappedErrorsGroup):
    """Registry errors become one line and their exit code (see :mod:`release_contract.exits`)."""

    roots = (RegistryError,)


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
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True, help="folder for the key pair")
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
@click.option("--version", "version", required=True, help="release version: dotted integers, higher than the last")
@click.option("--key", type=click.Path(path_type=Path), required=True, help="signing.key from keygen")
@click.option("--cpu-model", type=click.Path(path_type=Path), help="the plain int8 model (default: found in MODEL_DIR)")
@click.option("--edgetpu-model", type=click.Path(path_type=Path), help="the *_edgetpu.tflite model")
@click.option("--labels", type=click.Path(path_type=Path), help="labels file (default: MODEL_DIR/labels.txt)")
@click.option("--golden", type=click.Path(path_type=Path), help="raw input tensor bytes devices classify to validate")
@click.option("--golden-top1", type=int, help="class the golden input must yield")
@click.option("--input-shape", help="e.g. 1,224,224,3 (default: read from the CPU model)")
@click.option(
    "--mean",
    type=float,
    default=None,
    help="input normalization mean, with --std (default: none, the model's input quantization covers it)",
)
@click.option("--std", type=float, default=None, help="input normalization std, with --mean")
@click.option("--min-runtime", type=int, help="minimum Edge TPU runtime (default: from the compile report, else 0)")
@click.option("--expires-days", type=float, default=365.0, show_default=True, help="manifest lifetime")
@store_option
def push(
    model_dir: Path,
    name: str,
    version: str,
    key: Path,
    cpu_model: Optional[Path],
    edgetpu_model: Optional[Path],
    labels: Optional[Path],
    golden: Optional[Path],
    golden_top1: Optional[int],
    input_shape: Optional[str],
    mean: Optional[float],
    std: Optional[float],
    min_runtime: Optional[int],
    expires_days: float,
    store_url: Optional[str],
) -> None:
    """Sign the compiler's output folder MODEL_DIR as release NAME:VERSION and push it.

    \b
    Example:
      edge-registry push build/digits --name digits --version 3 --key keys/signing.key
    """
    signing_key = load_private_key(key)
    source = find_release_files(
        model_dir, cpu_model=cpu_model, labels=labels, edgetpu_model=edgetpu_model, golden=golden
    )
    shape = None
    if input_shape:
        try:
            shape = [int(d) for d in input_shape.split(",")]
        except ValueError as exc:
            raise click.BadParameter(
                "use comma-separated integers such as 1,224,224,3", param_hint="--input-shape"
            ) from exc
    if not (math.isfinite(expires_days) and 0 < expires_days <= MAX_EXPIRES_DAYS):
        raise UserError(f"--expires-days must be more than 0 and at most {MAX_EXPIRES_DAYS}, got {expires_days}", USAGE)
    manifest = build_manifest(
        name,
        version,
        source,
        input_shape=shape,
        mean=mean,
        std=std,
        min_runtime=min_runtime,
        expires_days=expires_days,
        golden_top1=golden_top1,
    )
    store = open_store(store_url, current_login())
    push_release(store, manifest, source, signing_key)
    click.echo(f"pushed {manifest.ref} ({manifest.total_size} bytes, {len(manifest.files)} files) to {store.url}")


@main.command(name="list")
@click.argument("name", required=False)
@store_option
def list_cmd(name: Optional[str], store_url: Optional[str]) -> None:
    """List releases (all, or the versions of NAME) with their channels.

    \b
    Example:
      edge-registry list digits --store ./registry
    """
    rows = open_store(store_url, current_login()).list(name)
    if not rows:
        click.echo("no releases")
    for info in rows:
        flags = ", ".join(info.channels + (["yanked"] if info.yanked else []))
        click.echo(f"{info.name}:{info.version}" + (f"  [{flags}]" if flags else ""))


@main.command()
@click.argument("ref", metavar="NAME[:VERSION|:canary|:stable]")
@click.option("--lineage", is_flag=True, help="print the chain from calibration data to the devices running it")
@click.option("--trust", type=click.Path(path_type=Path), multiple=True, help="with --lineage: check the signature")
@broker_option
@click.option("--prefix", default="edgetpu", show_default=True, help="MQTT topic prefix (with --lineage)")
@store_option
def show(
    ref: str, lineage: bool, trust: List[Path], broker: Optional[str], prefix: str, store_url: Optional[str]
) -> None:
    """Print the manifest of a release (default: its newest version that is not yanked).

    With --lineage: calibration set digest -> float model -> int8 model and fidelity -> compiled
    model -> signed release -> the devices running it now (with --broker).

    \b
    Example:
      edge-registry show digits:3
      edge-registry show --lineage digits:3 --broker mqtt://broker:1883 --trust keys/signing.pub
    """
    name, _, tag = ref.partition(":")
    store = open_store(store_url, current_login())
    version = store.resolve(name, tag or None)
    raw = store.envelope(name, version)
    try:
        envelope = loads_untrusted(raw, f"release.json of {name}:{version}", MAX_ENVELOPE_BYTES)
    except ValueError as exc:
        raise ManifestError(f"{exc}: the store copy is damaged") from exc
    if not lineage:
        click.echo(json.dumps(envelope, indent=2, sort_keys=True))
        return
    from registry.lineage import lineage_lines, running_devices

    signed, sigs = parse_envelope(raw)
    verified = TrustedKeys.from_paths(trust).verify(canonical_json(signed), sigs) if trust else None
    manifest = Manifest.from_dict(signed)
    devices = None
    broker = broker or os.environ.get("EDGE_REGISTRY_BROKER")
    if broker:
        controller = Controller(broker, None, Path("."))  # no key: it only reads announcements
        controller.connect()
        try:
            devices = running_devices(manifest, controller.announcements(prefix, quiet=1.0, limit=10.0))
        finally:
            controller.close()
    for line in lineage_lines(manifest, sigs, verified, devices):
        click.echo(line)


@main.command()
@click.argument("ref", metavar="NAME:VERSION")
@click.option("--to", "target", type=click.Path(path_type=Path), required=True, help="folder to create")
@click.option(
    "--trust",
    type=click.Path(path_type=Path),
    multiple=True,
    required=True,
    help="trusted signing.pub (or a folder of *.pub); repeatable",
)
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
    store = open_store(store_url, current_login())
    version = store.resolve(name, version) if version is None else version
    if target.exists() and not target.is_dir():
        raise UserError(f"--to {target} exists and is not a folder", USAGE)
    if target.exists() and any(target.iterdir()):
        raise UserError(f"--to {target} exists and is not empty", USAGE)
    empty_folder = target.exists()
    if empty_folder:
        target.rmdir()
    work = target.parent / f".{target.name}.download"
    source = open_source(store.url, login=current_login())
    try:
        manifest = verify_envelope(source.fetch_envelope(name, version), trusted)
        from tqdm import tqdm

        with tqdm(
            total=manifest.total_size,
            unit="B",
            unit_scale=True,
            desc=f"{name}:{version}",
            disable=not sys.stderr.isatty(),
        ) as bar:
            result = pull_release(
                source, name, version, trusted, target, work, runtime_version=runtime, progress=bar.update
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)  # a failed pull leaves nothing behind
        if empty_folder and not target.exists():
            target.mkdir()  # and gives the user's empty folder back
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
    name, version = full_ref(ref)
    open_store(store_url, current_login()).set_channel(name, version, channel)
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
    name, version = full_ref(ref)
    open_store(store_url, current_login()).yank(name, version)
    click.echo(f"yanked {name}:{version}")


main.add_command(rollout)
main.add_command(status)
main.add_command(captures)


if __name__ == "__main__":
    main()
