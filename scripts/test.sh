#!/usr/bin/env bash
# Runs every Ballast test. Installs what the tests need (socat, mbpoll, mosquitto, pymodbus, from
# Debian's packages) when it is missing, so it works on a fresh machine. Extra arguments go to
# `cargo test`, e.g. `scripts/test.sh -p device-models`.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v socat >/dev/null 2>&1 || missing+=(socat)
command -v mbpoll >/dev/null 2>&1 || missing+=(mbpoll)
command -v mosquitto_sub >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
# Debian's pymodbus imports serial_asyncio without depending on it.
/usr/bin/python3 -c 'from pymodbus.client import ModbusTcpClient' >/dev/null 2>&1 \
  || missing+=(python3-pymodbus python3-serial-asyncio)
if [ ${#missing[@]} -gt 0 ]; then
  echo "scripts/test.sh: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The broker is a test peer, not a service for this machine.
  if command -v systemctl >/dev/null 2>&1; then $sudo systemctl disable --now mosquitto >/dev/null 2>&1 || true; fi
fi

exec cargo test --workspace --locked "$@"
