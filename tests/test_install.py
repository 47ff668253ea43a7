"""The agent installs from the repository into a fresh virtualenv without TensorFlow, and runs."""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_plain_pip_install_runs_the_bundled_demo_without_tensorflow(tmp_path: Path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", str(ROOT)], capture_output=True, text=True, env=env, timeout=900
    )
    assert install.returncode == 0, install.stderr[-3000:]
    tf = subprocess.run([str(py), "-c", "import tensorflow"], capture_output=True, text=True, env=env)
    assert tf.returncode != 0, "the base install must not bring TensorFlow"
    run = subprocess.run(
        [str(env_dir / "bin" / "edge-agent"), "classify", "-n", "3", "-o", "jsonl"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    results = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["top_k"][0]["label"] for r in results] == ["zero", "zero", "one"]
    assert all("share/edgetpu-fleet/images" in r["source"] for r in results)
