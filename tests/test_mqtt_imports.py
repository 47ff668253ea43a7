"""The agent stays light: importing it, or asking the CLI for help, loads no TensorFlow, docker or oras."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("tensorflow", "docker", "oras", "keras")

PROBE = """
import sys
{body}
heavy = sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})
print(','.join(heavy))
"""


def loaded_heavy_modules(body: str) -> str:
    code = PROBE.format(body=body, heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_importing_the_agent_and_its_mqtt_modules_loads_no_heavy_library() -> None:
    body = ("import edge_agent, edge_agent.mqtt, edge_agent.outbox, edge_agent.publish, edge_agent.service, "
            "edge_agent.config, edge_agent.stats, edge_agent.hass, edge_agent.sender, edge_agent.broker, "
            "edge_agent.options")
    assert loaded_heavy_modules(body) == ""


def test_edge_agent_help_loads_no_heavy_library() -> None:
    body = ("from click.testing import CliRunner\nfrom edge_agent.cli import main\n"
            "r = CliRunner().invoke(main, ['--help'])\nassert r.exit_code == 0, r.output\n"
            "r = CliRunner().invoke(main, ['run', '--help'])\nassert r.exit_code == 0, r.output")
    assert loaded_heavy_modules(body) == ""
