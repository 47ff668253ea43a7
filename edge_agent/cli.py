"""``edge-agent``: classify images, video and camera frames on a Coral Edge TPU or the CPU.

Each command parses its options and calls the library; errors meant for users
(:class:`~edge_agent.errors.EdgeAgentError`) become one line on stderr and a
non-zero exit (the table of exit codes is in :mod:`release_contract.exits`).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

import click

from edge_agent.bundled import demo_model
from edge_agent.capture.commands import captures
from edge_agent.capture.options import capture_options
from edge_agent.config import RESIZE_MODES, RUNTIMES
from edge_agent.errors import EdgeAgentError
from edge_agent.input_config import input_from_spec
from edge_agent.options import load_cli_config, publish_options, stream_options
from release_contract.exits import MappedErrorsGroup, UserError

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_MODEL = demo_model()


class AgentGroup(MappedErrorsGroup):
    """The agent's errors become one line and their exit code (see :mod:`release_contract.exits`)."""

    roots = (EdgeAgentError,)


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="edge-agent: %(levelname)s: %(message)s", stream=sys.stderr)
    logging.captureWarnings(True)


@click.group(cls=AgentGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.version_option(package_name="edgetpu-fleet", prog_name="edge-agent")
def main(verbose: int, quiet: bool) -> None:
    """Run image classifiers on a Coral Edge TPU (or the CPU) and publish the results.

    \b
    Examples:
      edge-agent classify                          # bundled demo model on the sample images
      edge-agent classify --model m_edgetpu.tflite --labels l.txt --input cam
      edge-agent classify --input clip.mp4 --output jsonl --count 100
      edge-agent classify --input cam --mqtt mqtt://localhost:1883
      edge-agent run --config /etc/edge-agent/config.toml   # the service (systemd, Docker)
      edge-agent devices
    """
    _setup_logging(verbose, quiet)


def _print_text(result: Any) -> None:
    best = ", ".join(f"{c.label} {c.score:.3f}" for c in result.top_k) or "(nothing above threshold)"
    click.echo(f"{result.source} #{result.frame}: {best}  [{result.backend} {result.inference_ms:.1f} ms]")


def _print_jsonl(result: Any) -> None:
    click.echo(json.dumps(result.to_payload(), separators=(",", ":")))


@main.command()
@click.option(
    "--model",
    "-m",
    type=click.Path(path_type=Path),
    default=DEFAULT_MODEL,
    show_default="bundled demo",
    help="A .tflite model: int8 for the CPU or *_edgetpu.tflite for the Edge TPU.",
)
@click.option(
    "--labels",
    "-l",
    type=click.Path(path_type=Path),
    default=None,
    help="Labels file ('label' or 'id label' per line). Default: the demo labels for the demo model.",
)
@click.option(
    "--input",
    "-i",
    "input_specs",
    multiple=True,
    show_default="bundled sample images",
    help="Image, directory, glob, video file, cam / cam:N / /dev/videoN, or rtsp:// / http(s):// URL. "
    "Repeat for several sources, classified in turn; NAME=URL names one.",
)
@click.option("--top-k", "-k", type=click.IntRange(1, 1000), default=3, show_default=True)
@click.option(
    "--threshold",
    "-t",
    type=click.FloatRange(0.0, 1.0),
    default=0.0,
    show_default=True,
    help="Leave out classes scoring below this.",
)
@click.option("--count", "-n", type=click.IntRange(1), default=None, help="Stop after N frames.")
@click.option("--fps", type=click.FloatRange(0.0, min_open=True), default=None, help="Cap the frame rate.")
@click.option(
    "--output",
    "-o",
    type=click.Choice(["text", "jsonl", "none"]),
    default="text",
    show_default=True,
    help="What to print on stdout; jsonl has the same fields as the MQTT payload.",
)
@click.option(
    "--device",
    "-d",
    default="auto",
    show_default=True,
    help="auto, cpu, usb, usb:N, pci, pci:N or :N. A TPU asked for by name never falls back to the CPU.",
)
@click.option("--runtime", type=click.Choice(RUNTIMES), default="auto", show_default=True, help="Interpreter package.")
@click.option("--threads", type=click.IntRange(1, 64), default=2, show_default=True, help="CPU interpreter threads.")
@click.option("--mean", type=float, default=None, help="Pixel mean the model expects (with --std).")
@click.option("--std", type=float, default=None, help="Pixel std the model expects (with --mean).")
@click.option("--keep-aspect", is_flag=True, help="Keep the aspect ratio when resizing (pad with black).")
@click.option(
    "--resize",
    type=click.Choice(RESIZE_MODES),
    default=None,
    help="fast: OpenCV bilinear (default); coral: Pillow Lanczos, identical scores to Coral's classify_image.py.",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(1),
    default=24_000_000,
    show_default=True,
    help="Refuse images larger than this, or costing more memory than 8-bit RGB ones this large.",
)
@click.option("--device-id", default=None, help="Device id in results. Default: the hostname.")
@stream_options
@publish_options
@capture_options
def classify(
    model: Path,
    labels: Optional[Path],
    input_specs: Tuple[str, ...],
    top_k: int,
    threshold: float,
    count: Optional[int],
    fps: Optional[float],
    output: str,
    device: str,
    runtime: str,
    threads: int,
    mean: Optional[float],
    std: Optional[float],
    keep_aspect: bool,
    resize: Optional[str],
    max_pixels: int,
    device_id: Optional[str],
    streams: Dict[str, Any],
    publish: Dict[str, Any],
    capture: Dict[str, Any],
) -> None:
    """Classify an image, a folder, a video, cameras or streams.

    \b
    Examples:
      edge-agent classify
      edge-agent classify -m mobilenet_v2_edgetpu.tflite -l imagenet_labels.txt -i cat.jpg
      edge-agent classify -i 'photos/*.jpg' -o jsonl > results.jsonl
      edge-agent classify -i cam:0 --fps 5
      edge-agent classify -i rtsp://user:pass@10.0.0.5/stream --device usb
      edge-agent classify -i front=rtsp://10.0.0.5/s -i back=http://10.0.0.6/video.mjpg -n 100
      edge-agent classify -i cam:0 --mqtt mqtt://localhost:1883 --publish change
      EDGE_AGENT_MQTT_PASSWORD=... edge-agent classify --mqtt mqtts://broker:8883 --mqtt-user cam1
    """
    from edge_agent.service import run_pipeline

    flags = {
        **publish,
        **streams,
        "model": model,
        "labels": labels,
        "inputs": [input_from_spec(spec) for spec in input_specs] or None,
        "top_k": top_k,
        "threshold": threshold,
        "max_fps": fps,
        "device": device,
        "runtime": runtime,
        "threads": threads,
        "mean": mean,
        "std": std,
        "keep_aspect": keep_aspect or None,
        "resize": resize,
        "max_pixels": max_pixels,
        "device_id": device_id,
        "capture": capture,
    }
    config = load_cli_config(None, flags)
    sinks: List[Callable[[Any], None]] = []
    if output == "text":
        sinks.append(_print_text)
    elif output == "jsonl":
        sinks.append(_print_jsonl)
    stats = run_pipeline(config, sinks=sinks, count=count, flush_timeout=5.0)
    if stats.failed:
        raise UserError(f"input(s) failed: {', '.join(stats.failed)} (see the errors above)")
    if stats.skipped:
        raise UserError(f"{stats.skipped} input(s) could not be read (see warnings above)")


@main.command()
@click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="TOML config file (see deploy/config.example.toml) [env EDGE_AGENT_CONFIG].",
)
@click.option("--model", "-m", type=click.Path(path_type=Path), default=None, help="Model (default: bundled demo).")
@click.option("--labels", "-l", type=click.Path(path_type=Path), default=None, help="Labels file.")
@click.option(
    "--input",
    "-i",
    "input_specs",
    multiple=True,
    help="Image, directory, video, cam:N or rtsp:// URL; repeat for several, NAME=URL names one "
    "(replaces the config's inputs).",
)
@click.option("--device-id", default=None, help="Device id in topics and results (default: the hostname).")
@click.option("--device", "-d", default=None, help="auto, cpu, usb, usb:N, pci, pci:N or :N (default auto).")
@click.option("--top-k", "-k", type=click.IntRange(1, 1000), default=None, help="Classes per result (default 3).")
@click.option("--max-fps", type=click.FloatRange(0), default=None, help="Cap the frame rate (default: no cap).")
@click.option("--mean", type=float, default=None, help="Pixel mean the model expects (with --std).")
@click.option("--std", type=float, default=None, help="Pixel std the model expects (with --mean).")
@click.option("--keep-aspect", is_flag=True, default=None, help="Keep the aspect ratio when resizing (pad).")
@click.option("--resize", type=click.Choice(RESIZE_MODES), default=None, help="fast (default) or coral (Lanczos).")
@stream_options
@publish_options
@capture_options
def run(
    config_path: Optional[Path],
    model: Optional[Path],
    labels: Optional[Path],
    input_specs: Tuple[str, ...],
    device_id: Optional[str],
    device: Optional[str],
    top_k: Optional[int],
    max_fps: Optional[float],
    mean: Optional[float],
    std: Optional[float],
    keep_aspect: Optional[bool],
    resize: Optional[str],
    streams: Dict[str, Any],
    publish: Dict[str, Any],
    capture: Dict[str, Any],
) -> None:
    """Run as a service: classify and publish to MQTT until SIGTERM.

    Settings come from the config file, then EDGE_AGENT_* variables, then these flags.
    SIGTERM publishes 'offline', flushes the outbox and exits 0.

    \b
    Examples:
      edge-agent run --config /etc/edge-agent/config.toml
      EDGE_AGENT_MQTT_URL=mqtt://broker:1883 edge-agent run -i cam:0 --ha-discovery
      edge-agent run --mqtt mqtts://broker:8883 --mqtt-ca ca.pem --mqtt-user cam1   # password from env
    """
    from edge_agent.service import run_agent

    flags = {
        **publish,
        **streams,
        "model": model,
        "labels": labels,
        "inputs": [input_from_spec(spec) for spec in input_specs] or None,
        "device_id": device_id,
        "device": device,
        "top_k": top_k,
        "max_fps": max_fps,
        "mean": mean,
        "std": std,
        "keep_aspect": keep_aspect,
        "capture": capture,
        "resize": resize,
    }
    run_agent(load_cli_config(config_path, flags))


def _print_cameras() -> None:
    from edge_agent.inference.cameras import list_cameras

    cameras = list_cameras()
    if not cameras:
        click.echo("Cameras: none found (/dev/video*)")
    for camera in cameras:
        detail = ", ".join(camera.formats) if camera.formats else camera.problem
        click.echo(f"camera: {camera.path} {camera.name}: {detail}")


@main.command()
def devices() -> None:
    """List the Edge TPUs and V4L2 cameras attached to this machine, and the runtime version.

    \b
    Example:
      edge-agent devices
    """
    from edge_agent.inference.devices import find_edgetpus, pycoral_devices
    from edge_agent.inference.runtime import delegate_library, runtime_version

    _print_cameras()

    version = runtime_version(load_cli_config(None, {}).edgetpu_library)
    click.echo(f"Edge TPU runtime: {version or 'not installed (' + delegate_library() + ' not found)'}")
    found = find_edgetpus()
    coral = pycoral_devices()
    if not found and not coral:
        click.echo("Edge TPUs: none found")
        return
    for tpu in found:
        temp = f", {tpu.temperature_c:.1f} °C" if tpu.temperature_c is not None else ""
        click.echo(f"{tpu.kind}: {tpu.description} at {tpu.path}{temp}")
    for line in coral or []:
        click.echo(f"pycoral: {line}")


main.add_command(captures)


@main.command()
@click.option("--config", "-c", "config_path", type=click.Path(path_type=Path, dir_okay=False), default=None)
@click.option("--model", "-m", type=click.Path(path_type=Path), default=None, help="Model to probe (default: config).")
@click.option("--device", "-d", default=None, help="auto, cpu, usb, usb:N, pci, pci:N or :N (default: config).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of lines.")
@click.option("--sys-root", type=click.Path(path_type=Path), default=Path("/sys"), hidden=True)
@click.option("--dev-root", type=click.Path(path_type=Path), default=Path("/dev"), hidden=True)
def doctor(
    config_path: Optional[Path],
    model: Optional[Path],
    device: Optional[str],
    as_json: bool,
    sys_root: Path,
    dev_root: Path,
) -> None:
    """Say why the Edge TPU is or is not used: each check is OK or a problem with its fix.

    Exits 0 only when the configured path works (the TPU, or the CPU when asked for).

    \b
    Examples:
      edge-agent doctor
      edge-agent doctor -m models/mobilenet_v2_1.0_224_quant_edgetpu.tflite --json
    """
    from edge_agent.doctor import run_doctor

    config = load_cli_config(config_path, {"model": model, "device": device})
    report = run_doctor(config, sys_root, dev_root)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=1))
    else:
        for line in report.lines():
            click.echo(line)
    if not report.ok:
        raise UserError(report.summary())
