#!/usr/bin/env bash
# Install the Debian packages named on the command line when their program is missing.
# As root this runs apt-get; otherwise it prints the command to run and carries on
# (the tests or the demo then say clearly what is missing).
set -euo pipefail
missing=()
for pkg in "$@"; do
  case "$pkg" in
    mosquitto) command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing+=("$pkg") ;;
    docker-registry) [ -x /usr/bin/docker-registry ] || missing+=("$pkg") ;;
    systemd) command -v systemd-analyze >/dev/null || missing+=("$pkg") ;;
    ffmpeg) command -v ffmpeg >/dev/null || missing+=("$pkg") ;;
    *) dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg") ;;
  esac
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing ${missing[*]} with apt-get"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "missing Debian packages: ${missing[*]} (run: sudo apt-get install ${missing[*]})" >&2
fi
