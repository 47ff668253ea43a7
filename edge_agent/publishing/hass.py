"""Home Assistant MQTT discovery: the device and its sensors appear with no YAML.

:func:`discovery_messages` returns retained ``(topic, payload)`` pairs for
``<ha_prefix>/sensor/<node>/<object>/config``: the top-1 label and score (from the
classification topic), frames/s, inference p50 and outbox depth (from the stats topic),
all tied to one HA device and to the agent's ``status`` topic for availability.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional, Tuple

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


def discovery_messages(
    topics: Topics, ha_prefix: str = "homeassistant", model_name: Optional[str] = None
) -> List[Tuple[str, bytes]]:
    """The retained discovery config messages for one device (publish them with QoS 1, retain)."""
    node = "edgetpu_" + _UNSAFE.sub("_", topics.device)
    device: Dict[str, Any] = {
        "identifiers": [node],
        "name": f"Edge TPU {topics.device}",
        "manufacturer": "edgetpu-fleet",
        "model": model_name or "edge-agent",
    }
    messages = []
    for object_id, name, kind, template, extra in _SENSORS:
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
        topic = f"{ha_prefix}/sensor/{node}/{object_id}/config"
        messages.append((topic, json.dumps(config, separators=(",", ":"), sort_keys=True).encode()))
    return messages
