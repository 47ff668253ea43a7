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


def test_agent_image_installs_libedgetpu_from_googles_repository_and_runs_the_service() -> None:
    text = DOCKERFILE.read_text()
    assert "FROM python:3.11-slim-bookworm" in text
    assert "coral-edgetpu-stable main" in text and "libedgetpu1-std" in text
    assert 'ENTRYPOINT ["edge-agent"]' in text and 'CMD ["run"]' in text
    pip_lines = [line for line in text.splitlines() if "pip install" in line]
    assert pip_lines and not any("[" in line or "tensorflow" in line for line in pip_lines), "agent only, no extras"


def test_usb_passthrough_for_both_accelerator_ids_is_documented() -> None:
    for doc in (DOCKERFILE, ROOT / "docs" / "mqtt.md"):
        text = doc.read_text()
        assert "1a6e:089a" in text and "18d1:9302" in text, doc
        assert "/dev/bus/usb" in text, doc


def test_systemd_unit_runs_the_service_with_a_clean_stop() -> None:
    unit = (ROOT / "deploy" / "edge-agent.service").read_text()
    assert "ExecStart=/usr/local/bin/edge-agent run --config /etc/edge-agent/config.toml" in unit
    assert "KillSignal=SIGTERM" in unit and "EnvironmentFile=" in unit
