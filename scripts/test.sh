#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need (idempotently),
# then runs every test of the workspace in one (debug) profile.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mosquitto_pub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
# The broker itself, only as the comparison in the MQTT interoperability run.
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || need_apt+=(mosquitto)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# The console's browser tests (tests/console.rs) drive headless Chromium over WebDriver.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
# A small CJK font, so the Chinese pages' screenshots are legible (the pages need none).
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need_apt+=(fonts-wqy-microhei)
if ((${#need_apt[@]})); then
  echo "installing ${need_apt[*]} (apt-get)"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
  # Where the package starts Mosquitto as a service, stop it: the tests start their own.
  if [[ " ${need_apt[*]} " == *" mosquitto "* ]]; then
    $SUDO service mosquitto stop >/dev/null 2>&1 || true
  fi
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked "$@"
# The HTTP API against its own OpenAPI document, on the same debug build (scripts/schemathesis.sh).
cargo build --locked
bash scripts/schemathesis.sh
# MQTT interoperability scenarios (Paho suites' list) against the same binary, and Mosquitto.
bash scripts/mqtt-interop.sh
