"""Command-line options for publishing and the service, shared by ``classify`` and ``run``.

:func:`publish_options` adds the MQTT flags to a click command and hands the command one
``publish`` argument (flag values keyed like the config file, None = not given);
:func:`load_cli_config` merges them over the config file and the ``EDGE_AGENT_*``
environment. Passwords are best given as ``EDGE_AGENT_MQTT_PASSWORD`` so they stay out of
``ps``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, TypeVar

import click

from edge_agent.config import Config, load_config

F = TypeVar("F", bound=Callable[..., Any])

# flag parameter name -> key path in the config file
_PUBLISH_FIELDS: Dict[str, Tuple[str, ...]] = {
    "mqtt_url": ("mqtt", "url"),
    "topic_prefix": ("mqtt", "topic_prefix"),
    "qos": ("mqtt", "qos"),
    "mqtt_user": ("mqtt", "username"),
    "mqtt_password": ("mqtt", "password"),
    "mqtt_ca": ("mqtt", "ca_file"),
    "mqtt_cert": ("mqtt", "cert_file"),
    "mqtt_key": ("mqtt", "key_file"),
    "mqtt_protocol": ("mqtt", "protocol"),
    "mqtt_keepalive": ("mqtt", "keepalive"),
    "only_on_change": ("mqtt", "only_on_change"),
    "publish_policy": ("mqtt", "publish"),
    "ha_discovery": ("mqtt", "ha_discovery"),
    "stats_interval": ("mqtt", "stats_interval"),
    "outbox_max": ("outbox", "max_messages"),
    "state_dir": ("state_dir",),
}

_PUBLISH_OPTIONS = [
    click.option(
        "--mqtt",
        "mqtt_url",
        metavar="URL",
        default=None,
        help="Publish results to this broker, e.g. mqtt://localhost:1883 or mqtts://broker:8883 "
        "[env EDGE_AGENT_MQTT_URL].",
    ),
    click.option(
        "--topic-prefix",
        default=None,
        metavar="PREFIX",
        help="Topic prefix: results go to PREFIX/<device-id>/classification (default edgetpu).",
    ),
    click.option("--qos", type=click.IntRange(0, 2), default=None, help="MQTT QoS for results (default 1)."),
    click.option("--mqtt-user", default=None, help="Broker user name [env EDGE_AGENT_MQTT_USERNAME]."),
    click.option(
        "--mqtt-password",
        default=None,
        help="Broker password; prefer the environment: EDGE_AGENT_MQTT_PASSWORD (not visible in ps).",
    ),
    click.option(
        "--mqtt-ca",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="CA certificate (PEM) to verify an mqtts:// broker; default: the system's CAs.",
    ),
    click.option(
        "--mqtt-cert",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="Client certificate (PEM) for brokers that require one (with --mqtt-key).",
    ),
    click.option(
        "--mqtt-key",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="Private key (PEM) of --mqtt-cert.",
    ),
    click.option(
        "--mqtt-protocol",
        type=click.Choice(["3.1.1", "5"]),
        default=None,
        help="MQTT protocol version (default 3.1.1).",
    ),
    click.option(
        "--mqtt-keepalive",
        type=click.IntRange(0, 65535),
        default=None,
        metavar="SECONDS",
        help="Keepalive interval (default 60); the broker sends 'offline' after 1.5x this silence.",
    ),
    click.option(
        "--publish",
        "publish_policy",
        default=None,
        metavar="every|change|interval:S",
        help="Which results to publish: every one (default), on a change of the top-1 label, "
        "or at most one per S seconds. Stats count every frame.",
    ),
    click.option("--only-on-change", is_flag=True, default=None, help="Same as --publish change."),
    click.option(
        "--ha-discovery",
        is_flag=True,
        default=None,
        help="Announce the device and its sensors to Home Assistant (MQTT discovery).",
    ),
    click.option(
        "--stats-interval",
        type=click.FloatRange(0),
        default=None,
        metavar="SECONDS",
        help="Seconds between stats messages on <prefix>/<device-id>/stats (default 30; 0 = none).",
    ),
    click.option(
        "--outbox-max",
        type=click.IntRange(1),
        default=None,
        metavar="N",
        help="Results kept while the broker is unreachable; the oldest are dropped past N (default 100000).",
    ),
    click.option(
        "--state-dir",
        type=click.Path(path_type=Path, file_okay=False),
        default=None,
        help="Where the outbox lives (default /var/lib/edge-agent as root, else "
        "~/.local/state/edge-agent) [env EDGE_AGENT_STATE_DIR].",
    ),
]


def option_group(
    kwarg: str, options: Sequence[Callable[[Any], Any]], fields: Mapping[str, Tuple[str, ...]]
) -> Callable[[F], F]:
    """A decorator adding ``options`` to a click command, which receives their values as one dict
    named ``kwarg``: each parameter in ``fields`` lands under its key path, e.g. ``mqtt_url`` ->
    ``("mqtt", "url")`` gives ``{"mqtt": {"url": ...}}`` (None = not given), keyed like the config file."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            group: Dict[str, Any] = {}
            for param, path in fields.items():
                node = group
                for key in path[:-1]:
                    node = node.setdefault(key, {})
                node[path[-1]] = kwargs.pop(param, None)
            return fn(*args, **{kwarg: group}, **kwargs)

        decorated: Any = wrapper
        for option in reversed(options):
            decorated = option(decorated)
        return decorated

    return decorate


#: Adds the MQTT/outbox flags to a click command; it receives them as one ``publish`` dict.
publish_options = option_group("publish", _PUBLISH_OPTIONS, _PUBLISH_FIELDS)


_STREAM_OPTIONS = [
    click.option(
        "--rtsp-transport",
        type=click.Choice(["tcp", "udp"]),
        default=None,
        help="RTSP over TCP or UDP (default tcp) [config rtsp_transport].",
    ),
    click.option(
        "--connect-timeout",
        type=click.FloatRange(0, min_open=True),
        default=None,
        metavar="SECONDS",
        help="Seconds to open a stream (default 10).",
    ),
    click.option(
        "--stall-timeout",
        type=click.FloatRange(0, min_open=True),
        default=None,
        metavar="SECONDS",
        help="Seconds without a frame before a camera or stream is reopened (default 5).",
    ),
]


#: Adds the live-source flags (RTSP transport, connect and stall timeouts) to a click command; it
#: receives them as one ``streams`` dict keyed like the config file (None = not given).
stream_options = option_group(
    "streams", _STREAM_OPTIONS, {name: (name,) for name in ("rtsp_transport", "connect_timeout", "stall_timeout")}
)


def load_cli_config(
    config_path: Optional[Path], flags: Mapping[str, Any], environ: Optional[Mapping[str, str]] = None
) -> Config:
    """The Config for a command: ``config_path`` (or ``$EDGE_AGENT_CONFIG``), then the
    environment, then ``flags``. Raises ConfigError naming the bad field."""
    return load_config(config_path, os.environ if environ is None else environ, flags)
