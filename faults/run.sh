#!/usr/bin/env bash
# The fault suite under load (RELIABILITY.md): a 3-node cluster behind a real nginx using
# deploy/nginx.conf (installed from Debian's packages when missing), its own redis-server
# and a fresh Postgres database, traffic from faults/traffic.mjs (drivers at 1 Hz with
# status events, three passengers per trip, official socket.io-client with reconnection
# and `since`), one fault per case, one row per case appended to faults/results.md.
#
#   faults/run.sh [case ...]      cases: drain kill redis-stop redis-kill partition   (default: all)
#   TRIPS=… SECONDS=… faults/run.sh kill
#
# Needs: cargo (builds the release node), node + npm, redis-server, psql, root for apt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CASES=${*:-drain kill redis-stop redis-kill partition}
TRIPS=${TRIPS:-750}
SECONDS_RUN=${SECONDS:-60}
PG=${PGURL:-postgres://postgres@127.0.0.1:5432}
SECRET=fleetcast-fault-suite-secret-0123456789
OUT=${OUT:-faults/results.md}
WORK=$(mktemp -d /tmp/fcfaults.XXXXXX)
NODE_PORTS=(3211 3212 3213)
LB_PORT=3210
REDIS_PORT=${REDIS_PORT:-6391}
RELAY_PORT=${RELAY_PORT:-6392}
DB=""
PREFIX=""
ADMIN=""
EXPECT_DOWN=""
log() { printf '== %s\n' "$*" >&2; }

command -v nginx >/dev/null || { log "installing nginx"; DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx >/dev/null; }
[ -d faults/node_modules/socket.io-client ] || npm ci --prefix faults --no-audit --no-fund >/dev/null
# One cargo build at a time on this machine (other sessions take the same lock).
flock /tmp/fleetcast-cargo.lock cargo build --release -p fleetcast >&2
SERVER=$ROOT/target/release/fleetcast

declare -A PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  sleep 1
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  if [ -n "${KEEP:-}" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

start_redis() {
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
    >"$WORK/redis.log" 2>&1 &
  PIDS[redis]=$!
  for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return; sleep 0.1; done
  log "redis did not start"; exit 1
}

start_node() { # index 0..2; node 3 reaches Redis through the relay when one runs
  local i=$1 port=${NODE_PORTS[$1]} rport=$REDIS_PORT
  if [ "$i" = 2 ] && [ -n "${PIDS[relay]:-}" ]; then rport=$RELAY_PORT; fi
  FLEETCAST_JWT_SECRET=$SECRET "$SERVER" --bind "127.0.0.1:$port" --node-id "fault-$((i + 1))" \
    --redis-url "redis://127.0.0.1:$rport" --redis-prefix "$PREFIX" --database-url "$PG/$DB" \
    --trust-forwarded-for --conn-rate-per-sec 0 --location-min-interval-ms 500 \
    --max-connections-per-user 50 >>"$WORK/node$i.log" 2>&1 &
  PIDS[node$i]=$!
}

wait_ready() { # index
  local port=${NODE_PORTS[$1]} t0; t0=$(date +%s.%N)
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] && {
      echo "$(echo "$(date +%s.%N) - $t0" | bc)"; return; }
    sleep 0.1
  done
  echo "never"
}

start_nginx() {
  sed -e "s/listen 80;/listen 127.0.0.1:$LB_PORT;/" \
      -e "s/server fleetcast-1:3000;/server 127.0.0.1:${NODE_PORTS[0]};/" \
      -e "s/server fleetcast-2:3000;/server 127.0.0.1:${NODE_PORTS[1]};/" \
      -e "s/server fleetcast-3:3000;/server 127.0.0.1:${NODE_PORTS[2]};/" \
      -e "s|access_log /dev/stdout;|access_log off;|" \
      -e "s|error_log /dev/stderr warn;|error_log $WORK/nginx-error.log warn;|" \
      deploy/nginx.conf >"$WORK/nginx.conf"
  sed -i "1i pid $WORK/nginx.pid;" "$WORK/nginx.conf"
  nginx -t -c "$WORK/nginx.conf" -p "$WORK" >/dev/null 2>&1 || { nginx -t -c "$WORK/nginx.conf" -p "$WORK"; exit 1; }
  nginx -c "$WORK/nginx.conf" -p "$WORK"
}

trips_file() {
  local f=$WORK/trips.txt
  : >"$f"
  local sql=$WORK/trips.sql
  echo "BEGIN;" >"$sql"
  for i in $(seq 1 "$TRIPS"); do
    echo "t$i d$i p$i-a p$i-b p$i-c" >>"$f"
    echo "INSERT INTO trips (tenant, id, driver_id, title, total_seats, available_seats) VALUES ('default', 't$i', 'd$i', 'fault', 10, 7);" >>"$sql"
    for s in a b c; do
      echo "INSERT INTO bookings (tenant, id, trip_id, passenger_id, status) VALUES ('default', 'b$i$s', 't$i', 'p$i-$s', 'CONFIRMED');" >>"$sql"
    done
  done
  echo "COMMIT;" >>"$sql"
  psql "$PG/$DB" -q -v ON_ERROR_STOP=1 -f "$sql" >/dev/null
}

sockets_of() { # index → connections of the node (admin stats, this node's own figures)
  local port=${NODE_PORTS[$1]}
  curl -s "http://127.0.0.1:$port/api/v1/admin/stats" -H "authorization: Bearer $ADMIN" 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["node"]["connections"])' 2>/dev/null || echo "?"
}

# Runs the traffic for SECONDS_RUN seconds, calls the fault function after 20 s.
run_case() { # name, description, fault function
  local name=$1 what=$2 fault=$3
  DB=fcfault_$(date +%s)_$RANDOM
  PREFIX=fcf$RANDOM$RANDOM
  psql "$PG/postgres" -qc "CREATE DATABASE $DB" >/dev/null
  start_redis
  if [ "$name" = "${RELAY_CASE:-}" ]; then
    LISTEN=$RELAY_PORT TARGET=$REDIS_PORT node faults/relay.mjs >"$WORK/relay.log" 2>&1 &
    PIDS[relay]=$!
    sleep 0.5
  fi
  for i in 0 1 2; do start_node "$i"; done
  for i in 0 1 2; do [ "$(wait_ready "$i")" != never ] || { log "node $i not ready"; tail "$WORK/node$i.log"; exit 1; }; done
  start_nginx
  trips_file
  ADMIN=$(node -e '
    const c=require("node:crypto");const b=o=>Buffer.from(JSON.stringify(o)).toString("base64url");
    const h=b({alg:"HS256",typ:"JWT"}),p=b({sub:"fault-admin",role:"ADMIN",exp:Math.floor(Date.now()/1e3)+3600});
    console.log(h+"."+p+"."+c.createHmac("sha256",process.argv[1]).update(h+"."+p).digest("base64url"))' "$SECRET")
  log "$name: $TRIPS trips ($((TRIPS * 4)) sockets) for ${SECONDS_RUN} s"
  URL="http://127.0.0.1:$LB_PORT" SECRET=$SECRET TRIPS_FILE=$WORK/trips.txt SECONDS=$SECONDS_RUN \
    node faults/traffic.mjs >"$WORK/summary.json" 2>"$WORK/traffic.log" &
  local traffic=$!
  sleep 20
  local spread; spread="$(sockets_of 0)/$(sockets_of 1)/$(sockets_of 2)"
  log "$name: sockets per node $spread; injecting"
  $fault   # runs here (it starts and waits for processes); writes its recovery time to $WORK/back
  local back; back=$(cat "$WORK/back")
  log "$name: service back after $back s"
  wait "$traffic" || true
  local crashed=""
  for k in "${!PIDS[@]}"; do
    if [[ $k == node* ]] && ! kill -0 "${PIDS[$k]}" 2>/dev/null && [ "$EXPECT_DOWN" != "$k" ]; then
      crashed="$crashed $k"
    fi
  done
  local s; s=$(cat "$WORK/summary.json")
  grep '^missed' "$WORK/traffic.log" | head -20 >&2 || true
  log "$name: $s"
  python3 - "$OUT" "$name" "$what" "$spread" "$back" "${crashed:-none}" "$s" "$(git rev-parse --short HEAD)" <<'PY'
import json, sys, datetime
out, name, what, spread, back, crashed, summary, commit = sys.argv[1:]
s = json.loads(summary)
ok = s["statusMissed"] == 0 and s["acksTimedOut"] == 0 and crashed == "none" and s["passengersNeverSubscribed"] == 0
# A drain must answer every ack; a node killed without notice takes its in-flight acks along.
# A retried event (the client's `retries`) that had in fact been applied shows twice.
if name.startswith("node drained") and (s["acksCutByDisconnect"] > 0 or s.get("statusDuplicates", 0) > 0):
    ok = False
lost = s["locationsLost"]
pct = 100.0 * lost / s["locationsExpected"] if s["locationsExpected"] else 0
row = (f"| {name} | {what} | {s['sockets']} sockets ({spread} per node), {s['locationsOk']} locations and "
       f"{s['statusOk']} status events acked ok | {back} s (reconnect p99 {s['reconnectP99Ms']} ms, max {s['reconnectMaxMs']} ms, "
       f"{s['reconnects']} reconnects) | {s['statusMissed']} | {lost} ({pct:.2f} %) | "
       f"{s['acksTimedOut']} timed out, {s['acksCutByDisconnect']} cut by a disconnect unanswered, "
       f"{s.get('retriedAfterCut', 0)} cut and retried by the client (sent ≤ {s['cutAfterMsMax']} ms before it), "
       f"{s.get('statusDuplicates', 0)} delivered twice; refused: "
       f"{json.dumps(s['locationsRefused'])} {json.dumps(s['statusRefused'])} | {crashed} | "
       f"{'pass' if ok else 'FAIL'} | {datetime.datetime.utcnow():%Y-%m-%d %H:%M}Z {commit} |")
with open(out, "a") as f:
    f.write(row + "\n")
print(row)
PY
  for k in "${!PIDS[@]}"; do kill -CONT "${PIDS[$k]}" 2>/dev/null || true; kill "${PIDS[$k]}" 2>/dev/null || true; done
  PIDS=()
  EXPECT_DOWN=""
  kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  sleep 2
  psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
}

# Faults: each writes to $WORK/back how long until the service was whole again.
fault_drain() { # SIGTERM node 2 (graceful drain), restart it 10 s later
  kill -TERM "${PIDS[node1]}"
  local t0; t0=$(date +%s.%N)
  wait "${PIDS[node1]}" 2>/dev/null || true
  sleep 10
  start_node 1
  local r; r=$(wait_ready 1)
  echo "$(echo "$(date +%s.%N) - $t0" | bc) (drained; restarted after 10 s, ready $r s later)" >"$WORK/back"
}
fault_kill() { # SIGKILL node 3, no restart
  EXPECT_DOWN=node2
  kill -KILL "${PIDS[node2]}"
  sleep 1
  echo "n/a (not restarted; its clients reconnect to the others)" >"$WORK/back"
}
fault_redis_stop() { # SIGSTOP Redis for 10 s
  kill -STOP "${PIDS[redis]}"
  sleep 10
  kill -CONT "${PIDS[redis]}"
  local t0; t0=$(date +%s.%N)
  for i in 0 1 2; do wait_ready "$i" >/dev/null; done
  echo "$(echo "$(date +%s.%N) - $t0" | bc) after SIGCONT (frozen 10 s)" >"$WORK/back"
}
fault_partition() { # node 3 cut off from Redis for 10 s (the relay holds every byte)
  kill -USR1 "${PIDS[relay]}"
  local t0; t0=$(date +%s.%N) unready="no"
  for _ in $(seq 1 60); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${NODE_PORTS[2]}/readyz")" = 503 ] && {
      unready="$(echo "$(date +%s.%N) - $t0" | bc) s"; break; }
    sleep 0.1
  done
  sleep "$(echo "10 - ($(date +%s.%N) - $t0)" | bc)"
  kill -USR2 "${PIDS[relay]}"
  local t1; t1=$(date +%s.%N)
  local r; r=$(wait_ready 2)
  echo "$r after the heal (partitioned 10 s; node 3 not ready after $unready)" >"$WORK/back"
}
fault_redis_kill() { # SIGKILL Redis, restart after 5 s (empty)
  kill -KILL "${PIDS[redis]}"
  wait "${PIDS[redis]}" 2>/dev/null || true
  sleep 5
  start_redis
  local t0; t0=$(date +%s.%N)
  for i in 0 1 2; do wait_ready "$i" >/dev/null; done
  echo "$(echo "$(date +%s.%N) - $t0" | bc) after the restart (down 5 s)" >"$WORK/back"
}

[ -f "$OUT" ] || cat >"$OUT" <<'EOF'
| case | injected | load held | back after | status events acked ok, then missed | locations lost (at most once) | acks | crashed | result | when |
|---|---|---|---|---|---|---|---|---|---|
EOF
for c in $CASES; do
  case "$c" in
    drain) run_case "node drained (SIGTERM)" "SIGTERM to node 2 at 20 s, restarted 10 s later" fault_drain ;;
    kill) run_case "node killed (SIGKILL)" "SIGKILL to node 3 at 20 s, not restarted" fault_kill ;;
    redis-stop) run_case "Redis frozen (SIGSTOP 10 s)" "SIGSTOP to Redis at 20 s, SIGCONT 10 s later" fault_redis_stop ;;
    partition) RELAY_CASE="node 3 partitioned from Redis" run_case "node 3 partitioned from Redis" "node 3's Redis traffic held both ways for 10 s at 20 s (a relay), then healed" fault_partition ;;
    redis-kill) run_case "Redis killed (SIGKILL)" "SIGKILL to Redis at 20 s, restarted empty 5 s later" fault_redis_kill ;;
    *) log "unknown case $c"; exit 2 ;;
  esac
done
