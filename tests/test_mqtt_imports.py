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


def test_importing_every_agent_and_contract_module_loads_no_heavy_library() -> None:
    body = (
        "import importlib, pkgutil, edge_agent, release_contract\n"
        "for pkg in (edge_agent, release_contract):\n"
        "    for mod in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(mod.name)"
    )
    assert loaded_heavy_modules(body) == ""


def test_edge_agent_help_loads_no_heavy_library() -> None:
    body = (
        "from click.testing import CliRunner\nfrom edge_agent.cli import main\n"
        "r = CliRunner().invoke(main, ['--help'])\nassert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(main, ['run', '--help'])\nassert r.exit_code == 0, r.output"
    )
    assert loaded_heavy_modules(body) == ""
