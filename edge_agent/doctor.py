"""``edge-agent doctor``: why the Edge TPU is (not) used, one check per line with its fix.

:func:`run_doctor` checks, in order: Edge TPUs on USB (ids, link speed, permission)
and PCIe (driver, /dev/apex_N), the libedgetpu runtime (present, version, build), the
interpreters and how each pairs with that runtime, the probe of the configured model
in a child process and its CPU twin, cameras, the state directory and the broker.
The report is ``ok`` only when the configured path works: what would make the agent
fail (or leave the Edge TPU unused when one is configured) is a ``problem``;
what only makes it slower is a ``warn``.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List

from edge_agent.bundled import demo_model
from edge_agent.config import Config
from edge_agent.doctor_checks import INFO, OK, PROBLEM, WARN, Check, camera_checks, pci_checks, usb_checks
from edge_agent.errors import ConfigError, EdgeAgentError
from edge_agent.inference import pairings
from edge_agent.inference.backends import importable, installed_backends, select_backend
from edge_agent.inference.probe import probe_delegate
from edge_agent.inference.runtime import delegate_library, interpreter_order, read_model
from release_contract.models import compiled_twin, cpu_twin, is_edgetpu_model
from release_contract.topics import BrokerUrlError, parse_broker_url

_MARK = {OK: "OK     ", PROBLEM: "PROBLEM", WARN: "WARN   ", INFO: "INFO   "}


@dataclass
class Report:
    """The doctor's checks; ``ok`` when none is a problem."""

    checks: List[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the configured path works (no check is a problem)."""
        return not any(c.status == PROBLEM for c in self.checks)

    def lines(self) -> List[str]:
        """One line per check: status, name, what was seen, and the fix after ``->``."""
        return [f"{_MARK[c.status]} {c.name}: {c.detail}" + (f" -> {c.fix}" if c.fix else "") for c in self.checks]

    def summary(self) -> str:
        """The closing line when something is wrong."""
        problems = [c.name for c in self.checks if c.status == PROBLEM]
        return f"{len(problems)} problem(s): {', '.join(problems)}"

    def to_json(self) -> Dict[str, Any]:
        """``{"ok": bool, "checks": [{"name", "status", "detail", "fix"}]}``."""
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}


def run_doctor(config: Config, sys_root: Path = Path("/sys"), dev_root: Path = Path("/dev")) -> Report:
    """Run every check for ``config`` against the sysfs tree ``sys_root`` and devices ``dev_root``."""
    wants_tpu = config.device != "cpu"
    tpu_severity = PROBLEM if wants_tpu else INFO
    report = Report()
    hardware = usb_checks(sys_root, dev_root, tpu_severity) + pci_checks(sys_root, dev_root, tpu_severity)
    if not hardware:
        hardware.insert(
            0,
            Check(
                "edge tpu",
                tpu_severity,
                "no USB Accelerator (1a6e:089a / 18d1:9302) and no /dev/apex_N",
                "plug the Accelerator in (replug after installing the runtime); for PCIe install gasket-dkms",
            ),
        )
    report.checks += hardware
    report.checks += _runtime_checks(config, tpu_severity)
    report.checks += camera_checks(dev_root, config.input)
    report.checks += [_state_check(config), *_broker_check(config)]
    return report


def _runtime_checks(config: Config, severity: str) -> List[Check]:
    library = config.edgetpu_library or delegate_library()
    out: List[Check] = []
    lib_file = pairings.library_path(library)
    version = pairings.library_version(library)
    lib = pairings.describe_libedgetpu(pairings.dpkg_libedgetpu(), version)
    if lib_file is None:
        out.append(
            Check(
                "libedgetpu",
                severity,
                f"{library} not found",
                "install a libedgetpu that matches your interpreter (README, 'Support matrix')",
            )
        )
    else:
        pkg = f", package {lib.package}" if lib.package else ""
        out.append(Check("libedgetpu", OK, f"{lib_file}: {lib.label}{pkg}, {version}"))
    installed = installed_backends()
    if not installed:
        out.append(Check("interpreter", PROBLEM, "no TFLite interpreter installed", "pip install ai-edge-litert"))
    for name, ver in installed.items():
        if not importable(name):
            out.append(Check(f"interpreter {name}", WARN, f"{ver} installed but its module is missing"))
            continue
        status, why = pairings.verdict(lib, name, ver) if lib_file else (INFO, "no libedgetpu to pair with")
        mark = {pairings.WORKS: OK, pairings.CRASHES: WARN}.get(status, INFO)
        fix = "see README, 'Support matrix'" if status == pairings.CRASHES else ""
        out.append(Check(f"interpreter {name}", mark, f"{ver} importable; with this libedgetpu: {status} ({why})", fix))
    if lib_file is not None and installed:
        out += _probe_checks(config, library, lib_file, severity)
    return out


def _probe_checks(config: Config, library: str, lib_file: str, severity: str) -> List[Check]:
    model = Path(config.model or demo_model())
    try:
        data = read_model(model)
    except EdgeAgentError as exc:
        return [Check("model", PROBLEM, str(exc))]
    if not is_edgetpu_model(data):
        twin = compiled_twin(model)
        if not twin.is_file():
            return [Check("probe", INFO, f"{model.name} is a CPU model and has no compiled twin: nothing to probe")]
        model, data = twin, read_model(twin)
    if config.device == "cpu":
        return [Check("probe", INFO, "--device cpu: the Edge TPU is not used")]
    try:
        backend = select_backend(config.runtime, interpreter_order(library) if config.runtime == "auto" else ())
    except ConfigError as exc:
        return [Check("probe", PROBLEM, str(exc))]
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    verdict = probe_delegate(
        library, lib_file, model, digest, config.device, backend.name, backend.label, timeout=config.probe_timeout
    )
    twin = cpu_twin(model)
    has_twin = twin != model and twin.is_file()
    out = []
    if verdict.ok:
        out.append(Check("probe", OK, f"{model.name}: {verdict.message()}"))
    else:
        out.append(Check("probe", severity, f"{model.name}: {verdict.message()}"))
    if has_twin:
        out.append(Check("cpu twin", OK, f"{twin.name} is beside it (the fallback of --device auto)"))
    else:
        status = WARN if config.device == "auto" else INFO
        out.append(
            Check("cpu twin", status, f"no {twin.name} beside {model.name}", "put the plain int8 model beside it")
        )
    return out


def _state_check(config: Config) -> Check:
    state = config.state_path
    try:
        state.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=state, prefix=".doctor-"):
            pass
    except OSError as exc:
        return Check(
            "state dir",
            PROBLEM,
            f"{state} is not writable: {exc.strerror or exc}",
            "set state_dir (EDGE_AGENT_STATE_DIR) to a writable directory; systemd: StateDirectory=",
        )
    return Check("state dir", OK, f"{state} is writable (uid {os.geteuid()})")


def _broker_check(config: Config) -> List[Check]:
    url = config.mqtt.url
    if not url:
        return [Check("broker", INFO, "no mqtt.url configured: results are not published")]
    try:
        broker = parse_broker_url(url)
    except BrokerUrlError as exc:
        return [Check("broker", PROBLEM, str(exc))]
    host, port = broker.host, broker.port
    try:
        with socket.create_connection((host, port), timeout=3.0):
            pass
    except OSError as exc:
        return [
            Check(
                "broker",
                PROBLEM,
                f"{host}:{port} is not reachable: {exc.strerror or exc}",
                "check mqtt.url and the network",
            )
        ]
    return [Check("broker", OK, f"{host}:{port} accepts connections")]
