"""``edge-agent captures list|export``: the frames this device kept for retraining."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from edge_agent.capture import archive
from edge_agent.errors import ConfigError, InputError
from edge_agent.options import load_cli_config

_dir_option = click.option(
    "--capture-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The capture directory (default: capture.dir of the config) [env EDGE_AGENT_CAPTURE_DIR].",
)
_config_option = click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="TOML config file whose [capture] dir to read [env EDGE_AGENT_CONFIG].",
)


def _folder(config_path: Optional[Path], capture_dir: Optional[Path]) -> Path:
    folder = capture_dir or load_cli_config(config_path, {}).capture.dir
    if folder is None:
        raise ConfigError("no capture directory: give --capture-dir or set capture.dir in the config")
    if not folder.is_dir():
        raise InputError(f"capture directory {folder} does not exist (nothing captured yet?)")
    return folder


@click.group()
def captures() -> None:
    """The frames kept for retraining (edge-agent classify/run --capture-dir)."""


@captures.command(name="list")
@_dir_option
@_config_option
def list_cmd(capture_dir: Optional[Path], config_path: Optional[Path]) -> None:
    """One line per capture, oldest first: time, predicted label and score, reason, file.

    \b
    Example:
      edge-agent captures list --capture-dir /var/lib/edge-agent/captures
    """
    count = size = 0
    for capture in archive.iter_captures(_folder(config_path, capture_dir)):
        top = (capture.record.get("result", {}).get("top_k") or [{}])[0]
        score = top.get("score", 0.0) if isinstance(top, dict) else 0.0
        reason = capture.record.get("reason", "")
        click.echo(f"{capture.captured_at}  {capture.label} {score:.3f}  {reason:<6}  {capture.image_path.name}")
        count, size = count + 1, size + capture.size
    click.echo(f"{count} captures, {size / 1e6:.1f} MB")


@captures.command()
@click.option("--to", "target", type=click.Path(path_type=Path, file_okay=False), required=True)
@_dir_option
@_config_option
def export(target: Path, capture_dir: Optional[Path], config_path: Optional[Path]) -> None:
    """Copy the captures into TO as a dataset: one folder per predicted label, each image beside its
    JSON record. Relabel by moving files between folders; `edge-compile quantize --calib TO` reads it.

    \b
    Example:
      edge-agent captures export --to ~/dataset --capture-dir /var/lib/edge-agent/captures
    """
    selected = list(archive.iter_captures(_folder(config_path, capture_dir)))
    try:
        copied = archive.export(selected, target)
    except OSError as exc:
        raise InputError(f"cannot export to {target}: {exc.strerror or exc}") from exc
    click.echo(f"exported {copied} new of {len(selected)} captures to {target}")
