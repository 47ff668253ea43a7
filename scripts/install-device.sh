#!/usr/bin/env bash
# Install edge-agent on a device without touching the system Python (Debian 12 and Raspberry Pi
# OS refuse `sudo pip install .`, PEP 668): a virtualenv under $PREFIX, a link in $BINDIR, the
# systemd unit, the udev rule (when the runtime package brought none) and an example config.
#
#   sudo make install-device                       # /opt/edge-agent, /usr/local/bin/edge-agent
#   make install-device PREFIX=$HOME/edge-agent BINDIR=$HOME/.local/bin SERVICE=no   # no root
#
# Variables: PREFIX BINDIR SYSCONFDIR UNITDIR UDEVDIR PYTHON SERVICE (yes|no) PIP_ARGS.
# Run again to upgrade: the virtualenv is reused and the package reinstalled; an existing
# config is kept. It does not install libedgetpu or an interpreter pairing: see README,
# "Support matrix".
set -euo pipefail
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=${PREFIX:-/opt/edge-agent}
BINDIR=${BINDIR:-/usr/local/bin}
SYSCONFDIR=${SYSCONFDIR:-/etc}
UNITDIR=${UNITDIR:-/etc/systemd/system}
UDEVDIR=${UDEVDIR:-/etc/udev/rules.d}
PYTHON=${PYTHON:-python3}
SERVICE=${SERVICE:-yes}
PIP_ARGS=${PIP_ARGS:-}

fail() { echo "install-device: $*" >&2; exit 1; }

"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null \
  || fail "$PYTHON is not Python 3.10 or newer"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
  || fail "$PYTHON cannot create virtualenvs: sudo apt-get install python3-venv"
mkdir -p "$PREFIX" 2>/dev/null && [ -w "$PREFIX" ] \
  || fail "cannot write to $PREFIX: run with sudo, or set PREFIX= and BINDIR= to your own folders"

[ -x "$PREFIX/bin/python" ] || "$PYTHON" -m venv "$PREFIX"
# shellcheck disable=SC2086  # PIP_ARGS holds several words on purpose
"$PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check $PIP_ARGS "$SRC"
install -d "$BINDIR"
ln -sfn "$PREFIX/bin/edge-agent" "$BINDIR/edge-agent"
install -D -m 644 "$SRC/docs/hardware.md" "$PREFIX/doc/hardware.md"
echo "installed: $BINDIR/edge-agent -> $PREFIX/bin/edge-agent ($("$PREFIX/bin/edge-agent" --version))"

[ "$SERVICE" = yes ] || exit 0
install -D -m 644 "$SRC/deploy/edge-agent.service" "$UNITDIR/edge-agent.service"
if [ ! -e "$SYSCONFDIR/edge-agent/config.toml" ]; then
  install -D -m 644 "$SRC/deploy/config.example.toml" "$SYSCONFDIR/edge-agent/config.toml"
fi
# Coral's runtime packages bring a USB rule of their own; this one also covers PCIe and
# runtimes without a package, and gives the same group, so both may coexist.
install -D -m 644 "$SRC/deploy/99-edgetpu-accelerator.rules" "$UDEVDIR/99-edgetpu-accelerator.rules"
echo "udev: installed $UDEVDIR/99-edgetpu-accelerator.rules (replug the Accelerator)"
if [ "$UNITDIR" = /etc/systemd/system ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  udevadm control --reload-rules 2>/dev/null || true
fi
echo "next: edit $SYSCONFDIR/edge-agent/config.toml, run 'edge-agent doctor --config $SYSCONFDIR/edge-agent/config.toml',"
echo "      then: sudo systemctl enable --now edge-agent"
