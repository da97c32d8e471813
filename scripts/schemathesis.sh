#!/usr/bin/env bash
# Property-based check of the HTTP API against its own OpenAPI document (schemathesis 4.x):
# every documented operation gets a bounded number of generated requests, valid and invalid,
# with every check enabled (no server errors, documented status codes and content types,
# responses matching their schemas, valid data accepted, invalid data rejected, auth not
# ignored, …). Exits non-zero on any failure.
#
# It starts the real debug binary on loopback ports (port 0, read back from its first line)
# with a temporary data dir, an admin key made by `prognos apikey create` and a small
# service network made over the API, and stops it afterwards.
#
#   scripts/schemathesis.sh                 # after `cargo build`
#   PROGNOS_BIN=path/to/prognos scripts/schemathesis.sh
#   SCHEMATHESIS_MAX_EXAMPLES=50 scripts/schemathesis.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
target="$(mkdir -p "${CARGO_TARGET_DIR:-target}" && cd "${CARGO_TARGET_DIR:-target}" && pwd)"
bin="${PROGNOS_BIN:-$target/debug/prognos}"
venv="$target/venv"
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-20}"
# The whole run (all phases) is cut off after this many seconds, so CI stays bounded.
budget="${SCHEMATHESIS_TIME_BUDGET:-600}"

[ -x "$bin" ] || { echo "no binary at $bin: run cargo build first" >&2; exit 2; }

# The venv is made once and reused while it holds the pinned version.
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q " $SCHEMATHESIS_VERSION\$"; then
  echo "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

data="$(mktemp -d)"
out="$data/server.out"
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    # Graceful shutdown takes a few seconds at most; then it is killed.
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -rf "$data"
}
trap cleanup EXIT

key="$("$bin" apikey create --role admin --label schemathesis --data-dir "$data" | jq -r .key)"
# schemathesis sends many requests without or with a wrong key on purpose (its auth checks);
# the failed-key throttle would then answer 429 to the good ones from the same address.
printf '[http]\nauth_failures_burst = 1000000\nauth_failures_per_minute = 1000000\n' >"$data/prognos.toml"
"$bin" serve --config "$data/prognos.toml" --data-dir "$data" --mqtt-addr 127.0.0.1:0 --http-addr 127.0.0.1:0 >"$out" 2>"$data/server.err" &
pid=$!
# "prognos: serving MQTT on 127.0.0.1:P and HTTP on 127.0.0.1:Q, data in …"
port=""
for _ in $(seq 100); do
  port="$(sed -n 's/.*HTTP on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$out" | head -1)"
  [ -n "$port" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$data/server.err" >&2; exit 2; }
  sleep 0.1
done
[ -n "$port" ] || { echo "the server did not report its HTTP port" >&2; exit 2; }
base="http://127.0.0.1:$port"

# A small service network, so that lookups by these ids find something and listings are not
# empty. Every call must succeed: a failure here is a broken API, not a schemathesis finding.
api() {
  local method="$1" path="$2" body="${3:-}"
  local code
  code="$(curl -sS -o "$data/last.json" -w '%{http_code}' -X "$method" "$base$path" \
    -H "Authorization: Bearer $key" -H 'Content-Type: application/json' ${body:+--data "$body"})"
  case "$code" in
    2??) ;;
    *) echo "seeding failed: $method $path -> $code $(cat "$data/last.json")" >&2; exit 2 ;;
  esac
}
api POST /api/v1/providers '{"provider_id":"oem","name":"OEM","kind":"oem","regions":["north"]}'
api POST /api/v1/providers '{"provider_id":"agent","name":"Agent","kind":"agent","parent_id":"oem","regions":["north"]}'
api POST /api/v1/customers '{"customer_id":"c1","name":"Plant operator","tier":"premium"}'
api POST /api/v1/sites '{"site_id":"s1","customer_id":"c1","name":"Plant","region":"north","lat":52.5,"lon":13.4}'
api POST /api/v1/devices '{"device_id":"pump-1","site_id":"s1","serial":"SN1","model":"P-100"}'
api POST /api/v1/technicians '{"technician_id":"t1","provider_id":"agent","name":"Tess","region":"north","home_lat":52.5,"home_lon":13.4,"skills":[{"skill":"bearing_wear","level":4}]}'
api POST /api/v1/parts '{"sku":"BRG","name":"Bearing","unit_cost":12.5,"abc_class":"A","fixes_modes":["bearing_wear"]}'
api POST /api/v1/locations '{"location_id":"wh","kind":"central","name":"Warehouse","lat":52.0,"lon":13.0}'
api PUT /api/v1/stock/wh/BRG '{"on_hand":5,"reorder_point":1}'
api POST /api/v1/tickets '{"title":"Bearing noise","device_id":"pump-1","failure_mode":"bearing_wear"}'

start=$(date +%s)
status=0
# Rules between fields that JSON Schema cannot state (scripts/schemathesis_hooks.py).
# It runs in the data dir, so its caches (.schemathesis/) go away with it.
(cd "$data" && PYTHONPATH="$OLDPWD/scripts${PYTHONPATH:+:$PYTHONPATH}" SCHEMATHESIS_HOOKS=schemathesis_hooks \
timeout --kill-after=10 "$budget" \
  "$venv/bin/schemathesis" run "$base/openapi.json" \
  --url "$base" \
  -H "Authorization: Bearer $key" \
  --checks all \
  --max-examples "$max_examples" \
  --seed "${SCHEMATHESIS_SEED:-1}" \
  --generation-database none \
  --no-color \
  --report junit --report-dir "$target/schemathesis" \
  ${SCHEMATHESIS_ARGS:-}) || status=$?
echo "schemathesis: exit $status after $(( $(date +%s) - start )) s"
if [ "$status" -eq 124 ]; then
  echo "schemathesis: the run exceeded its ${budget} s budget" >&2
fi
exit "$status"
