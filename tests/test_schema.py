"""The classification payload matches its shipped JSON Schema, and the schema rejects bad payloads."""

from __future__ import annotations

import copy
import json
import random
import time
from datetime import datetime, timezone
from importlib import resources
from typing import Any, Dict

import pytest
from jsonschema import Draft202012Validator

from edge_agent.inference.result import SCHEMA, Class, Classification, ModelInfo, utc_iso_ms


def load_schema() -> Dict[str, Any]:
    text = resources.files("edge_agent").joinpath("schemas/classification.schema.json").read_text()
    return json.loads(text)


def result(**changes: Any) -> Classification:
    fields: Dict[str, Any] = dict(
        device="cam1",
        model=ModelInfo("digits", "1.0.0", "sha256:" + "0f" * 32),
        backend="edgetpu",
        source="rtsp://cam/stream",
        frame=12,
        captured_at=time.time(),
        preprocess_ms=0.5,
        inference_ms=2.25,
        total_ms=3.0,
        top_k=[Class(3, 0.75, "three"), Class(8, 0.125, "eight")],
    )
    fields.update(changes)
    return Classification(**fields)


def test_schema_file_is_valid_and_names_the_payload_version() -> None:
    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema"]["const"] == SCHEMA


@pytest.mark.parametrize(
    "example",
    [
        result(),
        result(top_k=[], backend="cpu"),
        result(extra={"roi": [0, 0, 10, 10]}),
        result(model=ModelInfo("m", "", "")),
    ],
)
def test_payloads_validate_against_the_schema(example: Classification) -> None:
    Draft202012Validator(load_schema()).validate(example.to_payload())
    json.dumps(example.to_payload())  # JSON-ready as it is


@pytest.mark.parametrize(
    "path, value",
    [
        (("schema",), "edgetpu.classification/2"),
        (("backend",), "gpu"),
        (("frame",), -1),
        (("top_k", 0, "score"), 1.5),
        (("model", "digest"), "md5:abc"),
        (("captured_at",), "yesterday"),
    ],
)
def test_schema_rejects_wrong_values(path: tuple, value: Any) -> None:
    payload = copy.deepcopy(result().to_payload())
    target = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert not Draft202012Validator(load_schema()).is_valid(payload)


@pytest.mark.parametrize("field", ["id", "device", "model", "latency_ms", "top_k", "captured_at"])
def test_schema_requires_the_contract_fields(field: str) -> None:
    payload = result().to_payload()
    del payload[field]
    assert not Draft202012Validator(load_schema()).is_valid(payload)


def test_capture_time_is_written_exactly_as_datetime_writes_it() -> None:
    def by_datetime(timestamp: float) -> str:
        captured = datetime.fromtimestamp(timestamp, tz=timezone.utc)
        return captured.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    rng = random.Random(7)
    edges = [0.0, 1795400000.0, 1795400000.9995, 1795400000.9999995, 1795400000.99999949, 1795400000.0004999]
    edges += [-0.5, -1.0000005, 253402300799.999]  # before the epoch; the last second of year 9999
    samples = [rng.uniform(0, 4e9) for _ in range(20_000)]
    samples += [
        rng.randrange(4_000_000_000) + rng.randrange(10**6) / 1e6 + rng.choice([0, 5e-7, -5e-7]) for _ in range(20_000)
    ]
    for timestamp in edges + samples:
        assert utc_iso_ms(timestamp) == by_datetime(timestamp), timestamp
    assert result(captured_at=1795400000.68049).to_payload()["captured_at"] == "2026-11-23T02:13:20.680Z"
