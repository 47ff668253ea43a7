"""Dockerfile.agent passes hadolint and carries what a device needs (runtime, USB ids, service)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile.agent"


def test_agent_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    proc = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_agent_image_ships_a_known_good_runtime_pair_and_runs_the_service() -> None:
    text = DOCKERFILE.read_text()
    assert "FROM python:3.11-slim-bookworm" in text
    assert "ARG TF_VERSION=2.17.1" in text and "ARG LIBEDGETPU_VERSION=16.0tf2.17.1-1" in text
    assert "libedgetpu1-std_${LIBEDGETPU_VERSION}.bookworm_${TARGETARCH}.deb" in text
    assert "tflite_runtime-${TF_VERSION}-cp311-cp311-linux_aarch64.whl" in text
    assert "tflite_runtime-${TF_VERSION}-cp311-cp311-linux_x86_64.whl" in text
    assert "coral-edgetpu-stable" not in text  # the stock TF 2.5 build crashes in TFLite > 2.11
    assert 'ENTRYPOINT ["edge-agent"]' in text and 'CMD ["run"]' in text
    pip_lines = [line for line in text.splitlines() if "pip install" in line]
    assert pip_lines and not any("[" in line or "tensorflow" in line for line in pip_lines), "agent only, no extras"


def test_the_image_pair_is_one_the_known_good_table_says_works() -> None:
    from edge_agent.inference.pairings import WORKS, describe_libedgetpu, verdict

    lib = describe_libedgetpu("libedgetpu1-std=16.0tf2.17.1-1", None)
    assert verdict(lib, "tflite-runtime", "2.17.1")[0] == WORKS


def test_usb_passthrough_for_both_accelerator_ids_is_documented() -> None:
    for doc in (DOCKERFILE, ROOT / "docs" / "mqtt.md"):
        text = doc.read_text()
        assert "1a6e:089a" in text and "18d1:9302" in text, doc
        assert "/dev/bus/usb" in text, doc


def test_systemd_unit_runs_the_service_with_a_clean_stop() -> None:
    unit = (ROOT / "deploy" / "edge-agent.service").read_text()
    assert "ExecStart=/usr/local/bin/edge-agent run --config /etc/edge-agent/config.toml" in unit
    assert "KillSignal=SIGTERM" in unit and "EnvironmentFile=" in unit
