"""Home Assistant MQTT discovery: the device and its sensors appear with no YAML.

:func:`discovery_messages` returns retained ``(topic, payload)`` pairs for
``<ha_prefix>/sensor/<node>/<object>/config``: the top-1 label and score (from the
classification topic), frames/s, inference p50 and outbox depth (from the stats topic), and
per input (camera or stream) its state and frames/s (from the stats' ``inputs``), all tied to
one HA device and to the agent's ``status`` topic for availability.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from release_contract.topics import Topics

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

# object id -> (name, state topic kind, value template, extra fields)
_SENSORS: Tuple[Tuple[str, str, str, str, Dict[str, Any]], ...] = (
    (
        "top1_label",
        "Top-1 label",
        "classification",
        "{{ value_json.top_k[0].label if value_json.top_k else '' }}",
        {"icon": "mdi:tag"},
    ),
    (
        "top1_score",
        "Top-1 score",
        "classification",
        "{{ value_json.top_k[0].score if value_json.top_k else 0 }}",
        {"state_class": "measurement"},
    ),
    (
        "fps",
        "Frames per second",
        "stats",
        "{{ value_json.fps }}",
        {"unit_of_measurement": "fps", "state_class": "measurement"},
    ),
    (
        "inference_p50",
        "Inference p50",
        "stats",
        "{{ value_json.inference_ms.p50 }}",
        {"unit_of_measurement": "ms", "device_class": "duration", "state_class": "measurement"},
    ),
    (
        "queue_depth",
        "Outbox queue depth",
        "stats",
        "{{ value_json.queue_depth }}",
        {"state_class": "measurement", "entity_category": "diagnostic"},
    ),
)


def _input_sensors(inputs: Sequence[str]) -> List[Tuple[str, str, str, str, Dict[str, Any]]]:
    """A state sensor (streaming, reconnecting, failed, ...) and an fps sensor per input."""
    sensors: List[Tuple[str, str, str, str, Dict[str, Any]]] = []
    for name in inputs:
        key = json.dumps(name)  # a Jinja string literal
        slug = "input_" + _UNSAFE.sub("_", name)
        row = f"value_json.inputs[{key}]"
        sensors.append(
            (
                f"{slug}_state",
                f"{name} state",
                "stats",
                f"{{{{ {row}.state if {key} in value_json.get('inputs', {{}}) else 'unknown' }}}}",
                {
                    "icon": "mdi:cctv",
                    # the input's whole stats row (reconnects, last error, ...) as attributes
                    "json_attributes_template": f"{{{{ ({row} if {key} in value_json.get('inputs', {{}}) else {{}})"
                    " | tojson }}",
                },
            )
        )
        sensors.append(
            (
                f"{slug}_fps",
                f"{name} frames per second",
                "stats",
                f"{{{{ {row}.fps if {key} in value_json.get('inputs', {{}}) else 0 }}}}",
                {"unit_of_measurement": "fps", "state_class": "measurement"},
            )
        )
    return sensors


def discovery_messages(
    topics: Topics, ha_prefix: str = "homeassistant", model_name: Optional[str] = None, inputs: Sequence[str] = ()
) -> List[Tuple[str, bytes]]:
    """The retained discovery config messages for one device (publish them with QoS 1, retain);
    ``inputs`` are the names of its sources, each of which gets a state and an fps sensor."""
    node = "edgetpu_" + _UNSAFE.sub("_", topics.device)
    device: Dict[str, Any] = {
        "identifiers": [node],
        "name": f"Edge TPU {topics.device}",
        "manufacturer": "edgetpu-fleet",
        "model": model_name or "edge-agent",
    }
    messages = []
    for object_id, name, kind, template, extra in (*_SENSORS, *_input_sensors(inputs)):
        config: Dict[str, Any] = {
            "name": name,
            "unique_id": f"{node}_{object_id}",
            # entity id suggestion (the older "object_id" option was removed from Home Assistant in 2026.4)
            "default_entity_id": f"sensor.{node}_{object_id}",
            "state_topic": topics.classification if kind == "classification" else topics.stats,
            "value_template": template,
            "availability_topic": topics.status,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": device,
            **extra,
        }
        if "json_attributes_template" in config:
            config["json_attributes_topic"] = topics.stats
        topic = f"{ha_prefix}/sensor/{node}/{object_id}/config"
        messages.append((topic, json.dumps(config, separators=(",", ":"), sort_keys=True).encode()))
    return messages
