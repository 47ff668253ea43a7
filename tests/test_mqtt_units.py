"""The pure parts of publishing: reconnect delays, percentiles, temperatures, stats, discovery."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from pathlib import Path
from typing import List

import pytest

from edge_agent.inference.result import Class, Classification, ModelInfo
from edge_agent.publishing.broker import Backoff
from edge_agent.publishing.hass import discovery_messages
from edge_agent.publishing.stats import Stats, percentile, read_edgetpu_temperatures
from edge_agent.publishing.supervise import join_bounded
from release_contract.topics import Topics


def test_reconnect_delays_double_up_to_the_cap_with_jitter() -> None:
    backoff = Backoff(initial=0.5, cap=8.0, rng=random.Random(7))
    delays = [backoff.next() for _ in range(10)]
    ceilings = [0.5, 1, 2, 4, 8, 8, 8, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings))
    assert len(set(delays)) == len(delays), "jittered: no two attempts wait the same"
    backoff.reset()
    assert backoff.next() <= 0.5


def test_percentiles_use_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([], 50) is None and percentile([3.0], 99) == 3.0


def test_edgetpu_temperatures_are_read_in_celsius_and_bad_files_skipped(tmp_path: Path) -> None:
    for name, text in (("apex_0", "48125\n"), ("apex_1", "garbage"), ("apex_2", None)):
        (tmp_path / name).mkdir()
        if text is not None:
            (tmp_path / name / "temp").write_text(text)
    assert read_edgetpu_temperatures(tmp_path) == {"apex_0": 48.125}
    assert read_edgetpu_temperatures(tmp_path / "absent") == {}


def test_stats_count_frames_per_second_since_the_last_snapshot(tmp_path: Path) -> None:
    now: List[float] = [100.0]
    stats = Stats("cam1", clock=lambda: now[0], apex_root=tmp_path)
    result = Classification(
        "cam1", ModelInfo("m", "1", ""), "edgetpu", "s", 0, time.time(), 0.1, 2.0, 2.5, [Class(1, 0.9, "one")]
    )
    for _ in range(20):
        stats(result)
    stats.add_dropped_frames(3)
    now[0] = 102.0
    snap = stats.snapshot(queue_depth=7, dropped_messages=2)
    assert (snap["fps"], snap["frames"], snap["uptime_s"]) == (10.0, 20, 2.0)
    assert (snap["queue_depth"], snap["dropped_messages"], snap["dropped_frames"]) == (7, 2, 3)
    assert snap["backend"] == "edgetpu" and "edgetpu_temperature_c" not in snap
    now[0] = 104.0
    stats.count_dropped_frames_with(lambda: 5)  # the frame loop's own counter
    later = stats.snapshot()
    assert later["fps"] == 0.0 and later["dropped_frames"] == 8


def test_discovery_ties_every_sensor_to_the_device_and_its_status() -> None:
    messages = discovery_messages(Topics("farm", "trap.7"), "homeassistant", "insects")
    topics = [t for t, _ in messages]
    assert all(t.startswith("homeassistant/sensor/edgetpu_trap_7/") and t.endswith("/config") for t in topics)
    configs = [json.loads(p) for _, p in messages]
    assert {c["availability_topic"] for c in configs} == {"farm/trap.7/status"}
    assert {c["device"]["identifiers"][0] for c in configs} == {"edgetpu_trap_7"}
    assert all(c["default_entity_id"] == "sensor." + c["unique_id"] for c in configs)
    assert not any("object_id" in c for c in configs)
    assert {c["state_topic"] for c in configs} == {"farm/trap.7/classification", "farm/trap.7/stats"}


def test_a_worker_that_does_not_stop_is_left_behind_with_where_it_was(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()

    def stuck_in_here() -> None:
        release.wait(30)

    stuck = threading.Thread(target=stuck_in_here, daemon=True)
    stuck.start()
    with caplog.at_level(logging.WARNING):
        assert join_bounded(stuck, 0.2, "the test worker") is False
    assert "the test worker did not stop within 0 s" in caplog.text and "stuck_in_here" in caplog.text
    release.set()
    assert join_bounded(stuck, 5, "the test worker") is True
