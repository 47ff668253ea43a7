"""``edge-registry show --lineage``: the chain from calibration data to the devices running a release.

calibration set digest -> float model digest -> int8 digest and fidelity -> compiled digest,
compiler version and mapped operations -> signed release -> devices running it now (from
their retained ``<prefix>/<device>/model`` announcements, when a broker is given).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from release_contract.manifest import Manifest


def _short(sha: str) -> str:
    return f"sha256:{sha[:16]}…" if sha else "(unknown)"


def running_devices(manifest: Manifest, announcements: Mapping[str, Mapping[str, Any]]) -> List[str]:
    """Devices whose announcement names ``manifest``'s name and version, sorted; a device whose
    announced digest is none of the release's model files is marked ``(digest differs)``."""
    digests = {f"sha256:{e.sha256}" for role, e in manifest.files.items() if role in ("edgetpu_model", "cpu_model")}
    out = []
    for device, msg in sorted(announcements.items()):
        if msg.get("name") == manifest.name and msg.get("version") == manifest.version:
            digest = msg.get("digest")
            note = "" if not digest or digest in digests else " (digest differs)"
            backend = f" [{msg['backend']}]" if isinstance(msg.get("backend"), str) and msg.get("backend") else ""
            out.append(f"{device}{backend}{note}")
    return out


def lineage_lines(
    manifest: Manifest,
    signatures: List[Dict[str, Any]],
    verified_by: Optional[str] = None,
    devices: Optional[List[str]] = None,
) -> List[str]:
    """The lineage of ``manifest`` as lines for a terminal, from the data to the devices.

    ``verified_by`` is the key id that verified the signature (None: not checked); ``devices``
    the devices running it (None: no broker was asked).
    """
    lines = [f"{manifest.ref} lineage"]
    lin = manifest.lineage
    if lin is None:
        lines.append("  calibration set : not recorded (pushed without a *.lineage.json from edge-compile quantize)")
        lines.append("  float model     : not recorded")
        lines.append("  int8 model      : " + _short(manifest.files["cpu_model"].sha256) + " (no fidelity recorded)")
    else:
        if lin.calibration_random:
            cal = f"random noise ({lin.calibration_images} images): no data lineage, accuracy not representative"
        else:
            cal = f"{_short(lin.calibration_digest)} ({lin.calibration_images} images)"
        lines.append(f"  calibration set : {cal}")
        lines.append(f"  float model     : {lin.float_path} {_short(lin.float_sha256)}")
        fid = lin.fidelity
        fidelity = (
            "fidelity not measured"
            if fid is None
            else f"top-1 agreement {fid.top1_agreement:.1%} on {fid.images} images, "
            f"mean |score difference| {fid.mean_abs_diff:.4f}"
        )
        int8 = f"{lin.int8_path} {_short(lin.int8_sha256)} ({lin.int8_size} bytes)"
        lines.append(f"  int8 model      : {int8}, {fidelity}")
    compiled = manifest.files.get("edgetpu_model")
    if compiled is None:
        lines.append("  compiled model  : none (a CPU-only release)")
    else:
        model = manifest.compile_report.get("model", {}) if isinstance(manifest.compile_report, dict) else {}
        on_tpu, total = model.get("operations_on_edgetpu"), model.get("total_operations")
        mapped = f", {on_tpu} of {total} operations mapped to the Edge TPU" if on_tpu is not None and total else ""
        compiler = manifest.compiler_version or "unknown"
        lines.append(f"  compiled model  : {_short(compiled.sha256)}, edgetpu_compiler {compiler}{mapped}")
    keys = ", ".join(str(s.get("keyid", ""))[:16] for s in signatures) or "nobody"
    check = f"signature verified (key {verified_by[:16]})" if verified_by else "signature not checked (give --trust)"
    lines.append(f"  signed release  : {manifest.ref} created {manifest.created_at}, signed by {keys}; {check}")
    if devices is None:
        lines.append("  running on      : unknown (give --broker to ask the devices' retained model topics)")
    else:
        lines.append(f"  running on      : {', '.join(devices) if devices else 'no device announces it'}")
    return lines
