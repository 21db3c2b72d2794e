#!/usr/bin/env bash
# Bad input at volume (RELIABILITY.md): starts one fleetcast node (embedded; REDIS=1 adds a
# private redis-server on port 6591), seeds its SQLite database with the fuzz trips and the
# control trip, runs faults/fuzz.mjs against it for MINUTES (default 10), stops the node and
# appends one row to faults/fuzz-results.md. Exit status 0 = pass.
#
#   faults/fuzz.sh                          # 10 minutes, embedded node on 127.0.0.1:3410
#   MINUTES=2 CONNS=20 RATE=8 faults/fuzz.sh
#   REDIS=1 faults/fuzz.sh                  # the node in cluster mode on its own redis-server
#   FLEETCAST_BIN=/path/to/fleetcast faults/fuzz.sh   # default: target/release/fleetcast, built here
#   KEEP=1 keeps the work directory (node log, incidents) even when the run passes; OUT= writes no row.
#
# Needs: node + npm, sqlite3, redis-server for REDIS=1, cargo unless FLEETCAST_BIN is given.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-3410}
REDIS_PORT=${REDIS_PORT:-6591}
SECRET=fleetcast-fuzz-secret-0123456789
WORK=$(mktemp -d /tmp/fcfuzz.XXXXXX)
log() { printf '== %s\n' "$*" >&2; }

[ -d faults/node_modules/ws ] && [ -d faults/node_modules/socket.io-client ] || npm ci --prefix faults --no-audit --no-fund >/dev/null
BIN=${FLEETCAST_BIN:-}
if [ -z "$BIN" ]; then
  # One cargo build at a time on this machine (other sessions take the same lock).
  flock /tmp/fleetcast-cargo.lock cargo build --release -p fleetcast >&2
  BIN=$PWD/target/release/fleetcast
fi

NODE=""
REDIS_PID=""
cleanup() {
  [ -n "$NODE" ] && kill "$NODE" 2>/dev/null && wait "$NODE" 2>/dev/null || true
  [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null || true
}
trap cleanup EXIT

ARGS=(--bind "127.0.0.1:$PORT" --node-id fuzz-1 --database-url "sqlite://$WORK/fuzz.db?mode=rwc" --shutdown-drain-ms 2000)
MODE=embedded
if [ -n "${REDIS:-}" ]; then
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  ARGS+=(--redis-url "redis://127.0.0.1:$REDIS_PORT" --redis-prefix "fcfuzz$RANDOM")
  MODE="cluster mode (1 node, own redis-server)"
fi
# engineioxide logs at debug why it closes a websocket: the summary counts those reasons.
RUST_BACKTRACE=1 FLEETCAST_LOG=${FLEETCAST_LOG:-info,engineioxide::transport::ws=debug} FLEETCAST_JWT_SECRET=$SECRET "$BIN" "${ARGS[@]}" >"$WORK/node.log" 2>&1 &
NODE=$!
for _ in $(seq 1 300); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/readyz")" = 200 ] && break
  sleep 0.1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/readyz")" = 200 ] || { log "node not ready"; tail -20 "$WORK/node.log"; exit 1; }

# Fuzz trips (each assigned to a fuzz driver, booked by a fuzz passenger), driverless trips
# open to offers, and the control trip (driven by the control driver, booked by the control
# passenger; no fuzz user is its driver or passenger).
{
  echo ".timeout 5000"
  echo "BEGIN;"
  for i in $(seq 1 20); do
    st=$(case $((i % 3)) in 0) echo PUBLISHED ;; 1) echo IN_PROGRESS ;; *) echo DEPARTED ;; esac)
    ty=$([ $((i % 2)) = 0 ] && echo SHARED || echo PRIVATE)
    echo "INSERT INTO trips (tenant, id, trip_type, status, driver_id, title, origin_lat, origin_lng, dest_lat, dest_lng, total_seats, available_seats) VALUES ('default', 'fz-t$i', '$ty', '$st', 'fz-DRIVER-$i', 'fuzz', 48.85, 2.35, 48.9, 2.4, 10, 8);"
    echo "INSERT INTO bookings (tenant, id, trip_id, passenger_id, status) VALUES ('default', 'fz-b$i', 'fz-t$i', 'fz-PASSENGER-$i', 'CONFIRMED');"
  done
  for i in $(seq 1 10); do
    echo "INSERT INTO trips (tenant, id, trip_type, status, title, origin_lat, origin_lng, total_seats, available_seats, estimated_earnings) VALUES ('default', 'fz-open-$i', 'PRIVATE', 'PUBLISHED', 'open', 48.85, 2.35, 4, 4, 20);"
  done
  echo "INSERT INTO trips (tenant, id, status, driver_id, title, total_seats, available_seats) VALUES ('default', 'ctl-trip', 'IN_PROGRESS', 'ctl-driver', 'control', 10, 9);"
  echo "INSERT INTO bookings (tenant, id, trip_id, passenger_id, status) VALUES ('default', 'ctl-b', 'ctl-trip', 'ctl-passenger', 'CONFIRMED');"
  echo "COMMIT;"
} >"$WORK/seed.sql"
sqlite3 "$WORK/fuzz.db" <"$WORK/seed.sql"
TRIPS=$(seq -s, -f 'fz-t%g' 1 20)
OPEN=$(seq -s, -f 'fz-open-%g' 1 10)

log "fuzzing $MODE on :$PORT for ${MINUTES:-10} min (work dir $WORK)"
set +e
URL="http://127.0.0.1:$PORT" SECRET=$SECRET NODE_PID=$NODE NODE_LOG=$WORK/node.log TRIPS=$TRIPS OPEN_TRIPS=$OPEN \
  CONTROL_TRIP=ctl-trip CONTROL_DRIVER=ctl-driver CONTROL_PASSENGER=ctl-passenger INCIDENTS=$WORK/incidents.jsonl MODE=$MODE \
  NODE_COMMIT=$(cat "$(dirname "$BIN")/COMMIT" 2>/dev/null || true) OUT=${OUT-faults/fuzz-results.md} node faults/fuzz.mjs >"$WORK/summary.json" 2>"$WORK/fuzz.log"
rc=$?
set -e
cat "$WORK/summary.json"
tail -1 "$WORK/fuzz.log" >&2
if ! kill -0 "$NODE" 2>/dev/null; then log "the node is gone"; rc=1; fi
grep -n -A5 panicked "$WORK/node.log" | head -40 >&2 || true
if [ "$rc" != 0 ] || [ -n "${KEEP:-}" ]; then log "kept $WORK (node.log, incidents.jsonl, fuzz.log, summary.json)"; trap - EXIT; cleanup; else cleanup; trap - EXIT; rm -rf "$WORK"; fi
exit "$rc"
