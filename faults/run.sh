#!/usr/bin/env bash
# The fault suite under load (RELIABILITY.md): a 3-node cluster behind a real nginx using
# deploy/nginx.conf (installed from Debian's packages when missing), its own redis-server
# and a fresh Postgres database, traffic from faults/traffic.mjs (drivers at 1 Hz with
# status events, three passengers per trip, official socket.io-client with reconnection
# and `since`), one fault per case, one row per case appended to faults/results.md.
#
#   faults/run.sh [case ...]      cases: drain kill redis-stop redis-kill redis-kill-aof
#                                        partition postgres slow          (default: all)
#   TRIPS=… SECONDS=… faults/run.sh kill
#
# env: TRIPS (750: 4 sockets a trip), SECONDS (the traffic's length; default 60 s, 120 s for
#   postgres and slow), KEEP=1 keeps the run's directory (logs),
#   PORT_BASE (3210: nginx on it, the nodes on +1..+3, the worker's metrics on +4),
#   REDIS_PORT (6391), RELAY_PORT (6392), PG_PORT (5532: the postgres case's private
#   Postgres), PGURL (the Postgres of the other cases, postgres://postgres@127.0.0.1:5432),
#   FLEETCAST_BIN_DIR (take `fleetcast` and `fleetcast-worker` from there, no cargo build).
#
# Needs: cargo (builds the release node and worker) unless FLEETCAST_BIN_DIR, node + npm,
# redis-server, psql, pg_config/initdb (postgres case), root for apt.
set -euo pipefail
# bash counts SECONDS up from its value in the environment, 0 when absent: read it first.
SECONDS_ENV=$SECONDS
cd "$(dirname "$0")/.."
ROOT=$PWD
CASES=${*:-drain kill redis-stop redis-kill redis-kill-aof partition postgres slow}
TRIPS=${TRIPS:-750}
SHARED_PG=${PGURL:-postgres://postgres@127.0.0.1:5432}
PG=$SHARED_PG
SECRET=fleetcast-fault-suite-secret-0123456789
OUT=${OUT:-faults/results.md}
WORK=$(mktemp -d /tmp/fcfaults.XXXXXX)
PORT_BASE=${PORT_BASE:-3210}
LB_PORT=$PORT_BASE
NODE_PORTS=($((PORT_BASE + 1)) $((PORT_BASE + 2)) $((PORT_BASE + 3)))
WORKER_PORT=$((PORT_BASE + 4))
REDIS_PORT=${REDIS_PORT:-6391}
RELAY_PORT=${RELAY_PORT:-6392}
PG_PORT=${PG_PORT:-5532}
DB=""
PREFIX=""
ADMIN=""
EXPECT_DOWN=""
PGDIR=""
SECONDS_RUN=60
BIN_COMMIT=""
log() { printf '== %s\n' "$*" >&2; }

command -v nginx >/dev/null || { log "installing nginx"; DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx >/dev/null; }
[ -d faults/node_modules/socket.io-client ] || npm ci --prefix faults --no-audit --no-fund >/dev/null
if [ -n "${FLEETCAST_BIN_DIR:-}" ]; then
  SERVER=$FLEETCAST_BIN_DIR/fleetcast
  WORKER=$FLEETCAST_BIN_DIR/fleetcast-worker
  for b in "$SERVER" "$WORKER"; do [ -x "$b" ] || { log "no executable $b"; exit 1; }; done
  # The commit the binaries were built from, when the directory says (a file COMMIT).
  BIN_COMMIT=$(cat "$FLEETCAST_BIN_DIR/COMMIT" 2>/dev/null || true)
else
  # One cargo build at a time on this machine (other sessions take the same lock).
  flock /tmp/fleetcast-cargo.lock cargo build --release -p fleetcast -p fleetcast-worker >&2
  SERVER=$ROOT/target/release/fleetcast
  WORKER=$ROOT/target/release/fleetcast-worker
fi
for p in "$LB_PORT" "${NODE_PORTS[@]}" "$WORKER_PORT" "$REDIS_PORT" "$RELAY_PORT"; do
  if ss -ltnH "sport = :$p" | grep -q .; then log "port $p is in use (set PORT_BASE, REDIS_PORT, RELAY_PORT)"; exit 1; fi
done

declare -A PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  sleep 1
  if [ -n "$PGDIR" ]; then
    stop_private_pg immediate >/dev/null 2>&1 || true
    rm -rf "$PGDIR"
  else
    psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  if [ -n "${KEEP:-}" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# Redis: in memory only, or (REDIS_AOF=1) with an append-only file fsynced on every write,
# kept in $WORK/redis-data across restarts, as in production.
start_redis() {
  local persist=(--save '' --appendonly no --dir "$WORK")
  if [ -n "${REDIS_AOF:-}" ]; then
    mkdir -p "$WORK/redis-data"
    persist=(--save '' --appendonly yes --appendfsync always --dir "$WORK/redis-data")
  fi
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 "${persist[@]}" >>"$WORK/redis.log" 2>&1 &
  PIDS[redis]=$!
  for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && return; sleep 0.1; done
  log "redis did not start"; exit 1
}

# The postgres case's own Postgres (initdb in a temp dir, as tests/it/outage.rs does; the
# shared one on 5432 is never touched). As root, Postgres runs as the `postgres` user.
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
init_private_pg() {
  if ss -ltnH "sport = :$PG_PORT" | grep -q .; then log "port $PG_PORT is in use (set PG_PORT)"; exit 1; fi
  PGDIR=$(mktemp -d /tmp/fcfaultpg.XXXXXX)
  [ "$(id -u)" != 0 ] || chown postgres "$PGDIR"
  as_pg "$(pg_config --bindir)/initdb" -A trust -U postgres -D "$PGDIR/data" >"$WORK/pg-initdb.log" 2>&1 \
    || { cat "$WORK/pg-initdb.log"; exit 1; }
  start_private_pg
  PG=postgres://postgres@127.0.0.1:$PG_PORT
}
start_private_pg() {
  as_pg "$(pg_config --bindir)/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/postgres.log" -w -t 60 \
    -o "-p $PG_PORT -k $PGDIR -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
}
stop_private_pg() { # mode: fast | immediate
  as_pg "$(pg_config --bindir)/pg_ctl" -D "$PGDIR/data" -m "$1" -w -t 60 stop >/dev/null
}
drop_private_pg() {
  stop_private_pg fast >/dev/null 2>&1 || stop_private_pg immediate >/dev/null 2>&1 || true
  [ -n "${KEEP:-}" ] && cp "$PGDIR/postgres.log" "$WORK/postgres.log" 2>/dev/null
  rm -rf "$PGDIR"
  PGDIR=""
  PG=$SHARED_PG
}

LOC_MIN_INTERVAL=500
NODE1_LOG=""    # a case's log filter for node 1
NODE_FLAGS=()   # a case's extra node flags (last wins over the defaults below)
start_node() { # index 0..2; node 3 reaches Redis through the relay when one runs
  local i=$1 port=${NODE_PORTS[$1]} rport=$REDIS_PORT
  if [ "$i" = 2 ] && [ -n "${PIDS[relay]:-}" ]; then rport=$RELAY_PORT; fi
  local extra=("${NODE_FLAGS[@]}")
  if [ "$i" = 0 ] && [ -n "$NODE1_LOG" ]; then extra+=(--log "$NODE1_LOG"); fi
  FLEETCAST_JWT_SECRET=$SECRET "$SERVER" --bind "127.0.0.1:$port" --node-id "fault-$((i + 1))" \
    --redis-url "redis://127.0.0.1:$rport" --redis-prefix "$PREFIX" --database-url "$PG/$DB" \
    --trust-forwarded-for --conn-rate-per-sec 0 --location-min-interval-ms "$LOC_MIN_INTERVAL" \
    --max-connections-per-user 50 "${extra[@]}" >>"$WORK/node$i.log" 2>&1 &
  PIDS[node$i]=$!
}

# The separate snapshot worker (cluster mode), default settings but its metrics port.
start_worker() {
  "$WORKER" --database-url "$PG/$DB" --metrics-bind "127.0.0.1:$WORKER_PORT" >>"$WORK/worker.log" 2>&1 &
  PIDS[worker]=$!
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

metric_of() { # port, metric → its sum over every label set ("?" when unreachable)
  curl -s "http://127.0.0.1:$1/metrics" 2>/dev/null | python3 -c '
import sys
name, total, seen = sys.argv[1], 0.0, False
for line in sys.stdin:
    if line.startswith(name) and line[len(name)] in " {":
        total += float(line.rsplit(" ", 1)[1]); seen = True
print(int(total) if seen else 0)' "$2" 2>/dev/null || echo "?"
}
metric_nodes() { # metric → its sum over the three nodes
  local t=0 v
  for i in 0 1 2; do v=$(metric_of "${NODE_PORTS[$i]}" "$1"); [ "$v" = "?" ] && v=0; t=$((t + v)); done
  echo "$t"
}
stats_of() { # index, field of "node" in the admin stats
  curl -s "http://127.0.0.1:${NODE_PORTS[$1]}/api/v1/admin/stats" -H "authorization: Bearer $ADMIN" 2>/dev/null \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["node"][sys.argv[1]])' "$2" 2>/dev/null || echo "?"
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
now() { date +%s.%N; }
since() { printf '%.2f' "$(echo "$(now) - $1" | bc)"; }

# Runs the traffic for SECONDS_RUN seconds, calls the fault function after 20 s. Optional
# per-case hooks (set by the dispatch below): BEFORE (after the cluster is up, before the
# traffic), CHECK (after the traffic: writes $WORK/extra, text for the row, and
# $WORK/verdict, "pass" or "FAIL", which joins the common verdict).
run_case() { # name, description, fault function
  local name=$1 what=$2 fault=$3
  DB=fcfault_$(date +%s)_$RANDOM
  PREFIX=fcf$RANDOM$RANDOM
  : >"$WORK/extra"; : >"$WORK/verdict"
  [ -z "${PRIVATE_PG:-}" ] || init_private_pg
  psql "$PG/postgres" -qc "CREATE DATABASE $DB" >/dev/null
  start_redis
  if [ "$name" = "${RELAY_CASE:-}" ]; then
    LISTEN=$RELAY_PORT TARGET=$REDIS_PORT node faults/relay.mjs >"$WORK/relay.log" 2>&1 &
    PIDS[relay]=$!
    sleep 0.5
  fi
  for i in 0 1 2; do start_node "$i"; done
  for i in 0 1 2; do [ "$(wait_ready "$i")" != never ] || { log "node $i not ready"; tail "$WORK/node$i.log"; exit 1; }; done
  [ -z "${WITH_WORKER:-}" ] || start_worker
  start_nginx
  trips_file
  ADMIN=$(node -e '
    const c=require("node:crypto");const b=o=>Buffer.from(JSON.stringify(o)).toString("base64url");
    const h=b({alg:"HS256",typ:"JWT"}),p=b({sub:"fault-admin",role:"ADMIN",exp:Math.floor(Date.now()/1e3)+3600});
    console.log(h+"."+p+"."+c.createHmac("sha256",process.argv[1]).update(h+"."+p).digest("base64url"))' "$SECRET")
  [ -z "${BEFORE:-}" ] || $BEFORE
  log "$name: $TRIPS trips ($((TRIPS * 4)) sockets) for ${SECONDS_RUN} s"
  TRAFFIC_T0=$(now)
  URL="http://127.0.0.1:$LB_PORT" SECRET=$SECRET TRIPS_FILE=$WORK/trips.txt SECONDS=$SECONDS_RUN LAT_FILE=$WORK/latency.json \
    node faults/traffic.mjs >"$WORK/summary.json" 2>"$WORK/traffic.log" &
  local traffic=$!
  sleep 20
  local spread; spread="$(sockets_of 0)/$(sockets_of 1)/$(sockets_of 2)"
  log "$name: sockets per node $spread; injecting"
  $fault   # runs here (it starts and waits for processes); writes its recovery time to $WORK/back
  local back; back=$(cat "$WORK/back")
  log "$name: service back after $back s"
  wait "$traffic" || true
  [ -z "${CHECK:-}" ] || $CHECK
  local crashed=""
  for k in "${!PIDS[@]}"; do
    if [[ $k == node* || $k == worker ]] && ! kill -0 "${PIDS[$k]}" 2>/dev/null && [ "$EXPECT_DOWN" != "$k" ]; then
      crashed="$crashed $k"
    fi
  done
  local s; s=$(cat "$WORK/summary.json")
  grep '^missed' "$WORK/traffic.log" | head -20 >&2 || true
  log "$name: $s"
  [ ! -s "$WORK/extra" ] || log "$name: $(cat "$WORK/extra")"
  python3 - "$OUT" "$name" "$what" "$spread" "$back" "${crashed:-none}" "$s" "${BIN_COMMIT:-$(git rev-parse --short HEAD)}" \
    "$(cat "$WORK/extra")" "$(cat "$WORK/verdict")" <<'PY'
import json, sys, datetime
out, name, what, spread, back, crashed, summary, commit, extra, verdict = sys.argv[1:]
s = json.loads(summary)
ok = s["statusMissed"] == 0 and s["acksTimedOut"] == 0 and crashed == "none" and s["passengersNeverSubscribed"] == 0
# A drain must answer every ack; a node killed without notice takes its in-flight acks along.
# A retried event (the client's `retries`) that had in fact been applied shows twice.
if name.startswith("node drained") and (s["acksCutByDisconnect"] > 0 or s.get("statusDuplicates", 0) > 0):
    ok = False
if verdict.strip() and verdict.strip() != "pass":
    ok = False
lost = s["locationsLost"]
pct = 100.0 * lost / s["locationsExpected"] if s["locationsExpected"] else 0
# The recovery time is the text's first word when it is a number.
first, _, more = back.partition(" ")
try:
    back = f"{float(first):.2f} s {more}".strip()
except ValueError:
    pass
back = back + (f"; {extra.strip()}" if extra.strip() else "")
row = (f"| {name} | {what} | {s['sockets']} sockets ({spread} per node), {s['locationsOk']} locations and "
       f"{s['statusOk']} status events acked ok | {back} (reconnect p99 {s['reconnectP99Ms']} ms, max {s['reconnectMaxMs']} ms, "
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
  for k in "${!PIDS[@]}"; do wait "${PIDS[$k]}" 2>/dev/null || true; done
  PIDS=()
  EXPECT_DOWN=""
  kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  sleep 2
  if [ -n "$PGDIR" ]; then
    drop_private_pg
  else
    psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
  fi
  if [ -n "${KEEP:-}" ]; then
    local keep; keep="$WORK/$(echo "$name" | tr -c 'A-Za-z0-9\n' '_')"
    mkdir -p "$keep"
    find "$WORK" -maxdepth 1 -type f -exec mv {} "$keep/" \;
  fi
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
  sleep_rest 10 "$t0"
  kill -USR2 "${PIDS[relay]}"
  local t1; t1=$(date +%s.%N)
  local r; r=$(wait_ready 2)
  echo "$r after the heal (partitioned 10 s; node 3 not ready after $unready)" >"$WORK/back"
}
fault_redis_kill() { # SIGKILL Redis, restart after 5 s (empty, or with its AOF when REDIS_AOF=1)
  kill -KILL "${PIDS[redis]}"
  wait "${PIDS[redis]}" 2>/dev/null || true
  sleep 5
  local keys=""
  start_redis
  local t0; t0=$(date +%s.%N)
  [ -z "${REDIS_AOF:-}" ] || keys=", $(redis-cli -p "$REDIS_PORT" dbsize) keys reloaded from the AOF"
  for i in 0 1 2; do wait_ready "$i" >/dev/null; done
  echo "$(echo "$(date +%s.%N) - $t0" | bc) after the restart (down 5 s$keys)" >"$WORK/back"
}
# sleep_rest S T0: sleeps what is left of S seconds since T0 (epoch seconds), if anything
# (reading the nodes' metrics during an outage may take longer than the rest).
sleep_rest() {
  local rest; rest=$(echo "$1 - ($(date +%s.%N) - $2)" | bc)
  if [ "$(echo "$rest > 0" | bc)" = 1 ]; then sleep "$rest"; fi
}
# --- postgres: the private Postgres stopped for 60 s, the worker SIGKILLed mid-backlog ---
PG_BACK_AT=""
snap_sql() { psql "$PG/$DB" -XAtF ' ' -v ON_ERROR_STOP=1 -c "$1" 2>/dev/null; }
fault_postgres() {
  stop_private_pg immediate   # every backend and the postmaster at once, as a crash; port closed
  local t0; t0=$(now)
  sleep 58
  local held refused; held=$(metric_nodes fleetcast_snapshot_buffer_rows)
  refused=$(metric_nodes fleetcast_snapshot_push_failures_total)
  sleep_rest 60 "$t0"
  start_private_pg
  PG_BACK_AT=$(now)
  ( r=$PG_BACK_AT; for i in 0 1 2; do [ "$(wait_ready "$i")" != never ] || r=never; done
    if [ "$r" = never ]; then echo "never (a node not ready)"; else echo "$(since "$PG_BACK_AT")"; fi >"$WORK/pg-ready" ) &
  local ready_pid=$!
  # Kill the worker once it has finished backlog jobs since the restart and holds others.
  local killed="the worker was not killed: no moment with jobs both done and held was seen"
  local done_n held_n
  for _ in $(seq 1 600); do
    read -r done_n held_n < <(snap_sql "SELECT count(*) FILTER (WHERE status = 'Done' AND done_at >= to_timestamp($PG_BACK_AT)),
        count(*) FILTER (WHERE status IN ('Queued','Running')) FROM apalis.jobs WHERE job_type = 'fleetcast.snapshots'" || echo "0 0")
    if [ "${done_n:-0}" -gt 0 ] && [ "${held_n:-0}" -gt 0 ]; then
      kill -KILL "${PIDS[worker]}"
      wait "${PIDS[worker]}" 2>/dev/null || true
      local at; at=$(since "$PG_BACK_AT")
      local w; w=$(snap_sql "SELECT count(*) FROM apalis.jobs WHERE job_type = 'fleetcast.snapshots' AND status IN ('Pending','Queued','Running')")
      # The jobs the dead worker held, and how many of their rows it had already committed.
      snap_sql "SELECT id FROM apalis.jobs WHERE job_type = 'fleetcast.snapshots' AND status IN ('Queued','Running')" >"$WORK/held-jobs"
      snap_sql "SELECT id FROM apalis.jobs WHERE job_type = 'fleetcast.snapshots' AND status <> 'Done'" >"$WORK/backlog-jobs"
      local c; c=$(snap_sql "WITH h AS (SELECT convert_from(job, 'UTF8')::jsonb AS b FROM apalis.jobs
          WHERE job_type = 'fleetcast.snapshots' AND status IN ('Queued','Running')),
        r AS (SELECT x->>'tenant' AS t, x->>'driver_id' AS d, (x->>'recorded_at')::timestamptz AS ts FROM h, jsonb_array_elements(h.b->'rows') x)
        SELECT count(*), count(*) FILTER (WHERE EXISTS (SELECT 1 FROM location_snapshots s
          WHERE s.tenant = r.t AND s.driver_id = r.d AND s.recorded_at = r.ts)) FROM r")
      local rows; rows=$(snap_sql "SELECT count(*) FROM location_snapshots")
      local buf; buf=$(metric_nodes fleetcast_snapshot_buffer_rows)
      local held_rows committed; read -r held_rows committed <<<"$c"
      killed="worker SIGKILLed ${at} s after Postgres was back, mid-backlog: $done_n jobs done since, $w not done ($held_n held by it: $held_rows rows, $committed of them already committed), $buf rows still in the nodes' buffers, $rows rows in the table; restarted 2 s later"
      sleep 2
      start_worker
      break
    fi
    sleep 0.05
  done
  wait "$ready_pid" 2>/dev/null || true
  echo "$(cat "$WORK/pg-ready") after Postgres was back (every node ready again; stopped 60 s; $held sampled rows held in the nodes' buffers at 58 s, $refused failed pushes); $killed" >"$WORK/back"
}
check_postgres() {
  # Wait (≤ 120 s after the traffic) for every node's buffer to empty and the queue to drain.
  local buf depth drained="buffers or queue not empty 120 s after the traffic" c0; c0=$(now)
  for _ in $(seq 1 120); do
    buf=$(metric_nodes fleetcast_snapshot_buffer_rows)
    depth=$(snap_sql "SELECT count(*) FROM apalis.jobs WHERE job_type = 'fleetcast.snapshots' AND (status IN ('Pending','Queued','Running') OR (status = 'Failed' AND attempts < max_attempts))" || echo "?")
    if [ "$buf" = 0 ] && [ "$depth" = 0 ]; then drained="buffers and queue empty $(since "$c0") s after the traffic"; break; fi
    sleep 1
  done
  local sampled dropped
  sampled=$(metric_nodes fleetcast_locations_sampled_total)
  dropped=$(metric_nodes fleetcast_snapshot_rows_dropped_total)
  local r; r=$(snap_sql "WITH j AS (SELECT id, status, convert_from(job, 'UTF8')::jsonb AS b FROM apalis.jobs WHERE job_type = 'fleetcast.snapshots'),
      r AS (SELECT x->>'tenant' AS t, x->>'driver_id' AS d, (x->>'recorded_at')::timestamptz AS ts FROM j, jsonb_array_elements(j.b->'rows') x),
      k AS (SELECT t, d, ts, count(*) AS n FROM r GROUP BY 1, 2, 3)
    SELECT (SELECT count(*) FROM j), (SELECT count(*) FROM j WHERE status <> 'Done'), (SELECT count(*) FROM r), (SELECT count(*) FROM k),
      (SELECT count(*) FROM k WHERE n > 1), (SELECT count(*) FROM location_snapshots),
      (SELECT count(*) FROM (SELECT 1 FROM location_snapshots GROUP BY tenant, driver_id, recorded_at HAVING count(*) > 1) z),
      (SELECT count(*) FROM k WHERE NOT EXISTS (SELECT 1 FROM location_snapshots s WHERE s.tenant = k.t AND s.driver_id = k.d AND s.recorded_at = k.ts)),
      (SELECT count(*) FROM location_snapshots s WHERE NOT EXISTS (SELECT 1 FROM k WHERE s.tenant = k.t AND s.driver_id = k.d AND s.recorded_at = k.ts))" || echo "? ? ? ? ? ? ? ? ?")
  local jobs notdone jrows keys twice trows dups missing extra
  read -r jobs notdone jrows keys twice trows dups missing extra <<<"$r"
  local held_left="n/a" backlog="" ids
  if [ -s "$WORK/held-jobs" ]; then
    ids=$(sed "s/.*/'&'/" "$WORK/held-jobs" | paste -sd,)
    held_left=$(snap_sql "SELECT count(*) FROM apalis.jobs WHERE id IN ($ids) AND status <> 'Done'")
  fi
  if [ -s "$WORK/backlog-jobs" ]; then
    ids=$(sed "s/.*/'&'/" "$WORK/backlog-jobs" | paste -sd,)
    local bl_left bl_last
    read -r bl_left bl_last < <(snap_sql "SELECT count(*) FILTER (WHERE status <> 'Done'),
        round(extract(epoch FROM max(done_at) - to_timestamp($PG_BACK_AT))::numeric, 2) FROM apalis.jobs WHERE id IN ($ids)")
    backlog="; the $(wc -l <"$WORK/backlog-jobs") jobs not done at the kill: $bl_left left, the last done $bl_last s after Postgres was back"
    [ "$bl_left" = 0 ] || held_left="$held_left (backlog left $bl_left)"
  fi
  echo "snapshots: $sampled sampled by the nodes, $jrows rows in $jobs jobs ($keys distinct, $twice pushed twice), $trows rows in location_snapshots ($dups duplicates by (tenant, driver, recorded_at), $missing sampled and missing, $extra not sampled), $dropped dropped, $notdone jobs not done, $held_left of the killed worker's held jobs not done$backlog; $drained" >"$WORK/extra"
  if [ "$sampled" = "$keys" ] && [ "$keys" = "$trows" ] && [ "$dups" = 0 ] && [ "$missing" = 0 ] && [ "$extra" = 0 ] \
     && [ "$dropped" = 0 ] && [ "$notdone" = 0 ] && [[ $held_left == 0 || $held_left == n/a ]] && [ "$sampled" -gt 0 ] \
     && grep -q 'SIGKILLed' "$WORK/back"; then
    echo pass >"$WORK/verdict"
  else
    echo FAIL >"$WORK/verdict"
  fi
}

# --- slow: a reader that stops reading on a busy trip ---
# The busy trip's ids are 128 characters (the contract's longest), so each of its frames is
# ≈ 0.6 KB and a frozen reader's socket buffers (≈ 4 MB on loopback) fill within seconds.
BUSY_TRIP="tbusy-$(printf 'x%.0s' $(seq 1 122))"
BUSY_DRIVER="dbusy-$(printf 'y%.0s' $(seq 1 122))"
SLOW_AT=""; SLOW_CUT_AT=""
before_slow() {
  psql "$PG/$DB" -q -v ON_ERROR_STOP=1 -c "INSERT INTO trips (tenant, id, driver_id, title, total_seats, available_seats) VALUES ('default', '$BUSY_TRIP', '$BUSY_DRIVER', 'busy', 10, 10)" >/dev/null
  URL="http://127.0.0.1:$LB_PORT" SECRET=$SECRET BUSY_TRIP=$BUSY_TRIP BUSY_DRIVER=$BUSY_DRIVER RATE=$BUSY_RATE \
    node faults/slow.mjs driver >"$WORK/busy.out" 2>"$WORK/busy.err" &
  PIDS[busy]=$!
  URL="http://127.0.0.1:${NODE_PORTS[0]}" SECRET=$SECRET BUSY_TRIP=$BUSY_TRIP BUSY_DRIVER=$BUSY_DRIVER READER=slow-reader \
    node faults/slow.mjs reader >"$WORK/reader.out" 2>"$WORK/reader.err" &
  PIDS[reader]=$!
  # Light subscribers of ten ordinary trips straight on nodes 1 and 2: the latency the nodes
  # give, apart from the saturated traffic process.
  TARGETS="node1=http://127.0.0.1:${NODE_PORTS[0]},node2=http://127.0.0.1:${NODE_PORTS[1]}" SECRET=$SECRET \
    PROBE_TRIPS=$(seq -s, -f 't%g' 1 10) LAT_FILE=$WORK/probe.json node faults/slow.mjs probe 2>"$WORK/probe.err" &
  PIDS[probe]=$!
  for _ in $(seq 1 300); do grep -q '^ports' "$WORK/reader.out" && break; sleep 0.1; done
  grep -q '^ports' "$WORK/reader.out" || { log "slow reader not ready"; cat "$WORK/reader.err" "$WORK/busy.err" >&2; exit 1; }
  # Node 1's resident memory, every second.
  ( while :; do echo "$(date +%s.%N) $(rss_kib "${PIDS[node0]}")" >>"$WORK/rss.txt"; sleep 1; done ) &
  PIDS[rss]=$!
}
slow_sample() { # one line of $WORK/slow-trace: time, node 1's counters, the reader's two connections
  local m; m=$(curl -s -m 2 "http://127.0.0.1:${NODE_PORTS[0]}/metrics" | python3 -c '
import sys
want = ["fleetcast_connections_stalled_total", "fleetcast_sse_slow_clients_total", "fleetcast_socket_frames_dropped_total",
        "fleetcast_connections", "fleetcast_sse_streams"]
v = dict.fromkeys(want, 0)
for line in sys.stdin:
    name = line.split("{")[0].split(" ")[0]
    if name in v:
        v[name] += float(line.rsplit(" ", 1)[1])
print(" ".join(str(int(v[k])) for k in want))' 2>/dev/null || echo "? ? ? ? ?")
  # The node's side of each connection: its state and unsent bytes (absent: closed and gone).
  local ws sse
  ws=$(ss -tnH state all "( sport = :${NODE_PORTS[0]} and dport = :$SLOW_WS_PORT )" | awk '{print $1 ":" $3; exit}')
  sse=$(ss -tnH state all "( sport = :${NODE_PORTS[0]} and dport = :$SLOW_SSE_PORT )" | awk '{print $1 ":" $3; exit}')
  echo "$(date +%s.%N) $m ${ws:-gone:0} ${sse:-gone:0}" >>"$WORK/slow-trace"
}
fault_slow() {
  # At 40 s, not 20: the 10 s before the freeze are the baseline of the others' latency, and
  # 3,000 sockets take a while to connect on this machine.
  sleep 20
  read -r _ SLOW_WS_PORT SLOW_SSE_PORT < <(grep '^ports' "$WORK/reader.out")
  slow_sample
  echo "$(rss_kib "${PIDS[node0]}")" >"$WORK/rss-at-freeze"
  kill -STOP "${PIDS[reader]}"
  SLOW_AT=$(now)
  # Until the node has closed both connections and 12 s more (a stall is counted when its
  # timer fires), at most 100 s.
  local closed_at=""
  while [ "$(echo "$(now) - $SLOW_AT < 100" | bc)" = 1 ]; do
    slow_sample
    local last; last=$(tail -1 "$WORK/slow-trace")
    if [ -z "$closed_at" ] && [[ $(echo "$last" | awk '{print $7}') != ESTAB* ]] && [[ $(echo "$last" | awk '{print $8}') != ESTAB* ]]; then
      closed_at=$(now)
    fi
    [ -n "$closed_at" ] && [ "$(echo "$(now) - $closed_at > 12" | bc)" = 1 ] && break
    sleep 0.3
  done
  SLOW_CUT_AT=${closed_at:-$(now)}
  kill -CONT "${PIDS[reader]}"
  sleep 2
  kill "${PIDS[reader]}" 2>/dev/null || true
  wait "${PIDS[reader]}" 2>/dev/null || true
  unset 'PIDS[reader]'
  slow_sample
  # The stall guard's own log lines (exact times) tell which close was a stall.
  sed 's/\x1b\[[0-9;]*m//g' "$WORK/node0.log" | awk '/client stopped reading/ {print $1}' >"$WORK/stall-times"
  # The first Socket.IO session that ended on node 1 after the freeze (the traffic's stay) and why.
  sed 's/\x1b\[[0-9;]*m//g' "$WORK/node0.log" | grep 'spawning disconnect handler' \
    | sed -E 's/^([^ ]+) .*reason=([A-Za-z]+).*/\1 \2/' >"$WORK/disconnects"
  python3 - "$WORK" "$SLOW_AT" <<'PY' >"$WORK/back"
import sys, datetime
work, frozen = sys.argv[1], float(sys.argv[2])
rows = [l.split() for l in open(f"{work}/slow-trace")]
stalls = [datetime.datetime.fromisoformat(l.strip().replace("Z", "+00:00")).timestamp() for l in open(f"{work}/stall-times") if l.strip()]
stalls = [t for t in stalls if t >= frozen]
def num(x):
    return int(x) if x.lstrip("-").isdigit() else None
first, last = rows[0], rows[-1]
def closed(col):
    """Seconds after the freeze when the node's side was first seen closed, and the interval
    (absolute times) in which it closed: after the last sample that saw it open."""
    prev = frozen
    for r in rows:
        if float(r[0]) < frozen:
            continue
        if not r[col].startswith("ESTAB"):
            return float(r[0]) - frozen, (prev, float(r[0]))
        prev = float(r[0])
    return None, None
def peak_queue(col):
    return max((int(r[col].split(":")[1]) for r in rows if r[col].split(":")[1].isdigit()), default=0)
def when(col, pred):
    for r in rows:
        if float(r[0]) >= frozen and num(r[col]) is not None and pred(num(r[col])):
            return float(r[0]) - frozen
    return None
st0, st1 = num(first[1]), num(last[1])
(ws_closed, ws_span), (sse_closed, sse_span) = closed(6), closed(7)
sse_dropped = when(5, lambda v: v < num(first[5]))
fmt = lambda t: "never" if t is None else f"{t:.1f} s"
# A close is the guard's when one of its log lines falls in the interval the close happened in
# (the guard logs, counts, then the connection shuts down).
def by_stall(span):
    return span is not None and any(span[0] - 0.5 <= t <= span[1] + 0.5 for t in stalls)
seen = [l.strip() for l in open(f"{work}/reader.out") if l.startswith(("ws-", "sse-"))]
reasons = []
for l in open(f"{work}/disconnects"):
    at, _, why = l.strip().partition(" ")
    t = datetime.datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
    if ws_span and ws_span[0] - 0.5 <= t <= ws_span[1] + 0.5:
        reasons.append(why)
ws_reason = f"socketioxide's reason {'/'.join(sorted(set(reasons)))}" if reasons else "no session end logged then"
print(f"reader frozen at 40 s: node 1 closed its websocket after {fmt(ws_closed)} "
      f"({'by the stall guard' if by_stall(ws_span) else 'not by the stall guard'}, {ws_reason}; up to {peak_queue(6) // 1024} KiB unsent in the kernel), "
      f"dropped its SSE stream for a full queue after {fmt(sse_dropped)} and closed it after {fmt(sse_closed)} "
      f"({'by the stall guard' if by_stall(sse_span) else 'not by the stall guard'}; up to {peak_queue(7) // 1024} KiB unsent); "
      f"fleetcast_connections_stalled_total {first[1]} → {last[1]}, fleetcast_sse_slow_clients_total {first[2]} → {last[2]}, "
      f"fleetcast_socket_frames_dropped_total {first[3]} → {last[3]}; node 1 connections {first[4]} → {last[4]}, "
      f"SSE streams {first[5]} → {last[5]}; on waking (SIGCONT) the reader's clients reported: {'; '.join(seen) or 'nothing'}")
with open(f"{work}/slow-counts", "w") as f:
    f.write(f"{st0} {st1} {first[4]} {last[4]} {first[5]} {last[5]} {int(by_stall(ws_span))} {int(by_stall(sse_span))}\n")
PY
}
check_slow() {
  kill -TERM "${PIDS[busy]}" 2>/dev/null || true
  wait "${PIDS[busy]}" 2>/dev/null || true
  unset 'PIDS[busy]'
  kill "${PIDS[rss]}" 2>/dev/null || true
  wait "${PIDS[rss]}" 2>/dev/null || true
  unset 'PIDS[rss]'
  kill -TERM "${PIDS[probe]}" 2>/dev/null || true
  wait "${PIDS[probe]}" 2>/dev/null || true
  unset 'PIDS[probe]'
  python3 - "$WORK" "$SLOW_AT" "$SLOW_CUT_AT" "$BUSY_RATE" <<'PY' >"$WORK/slow-report"
import json, sys
work, frozen, cut, rate = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
st0, st1, c0, c1, s0, s1, ws_stall, sse_stall = open(f"{work}/slow-counts").read().split()
lines = open(f"{work}/busy.out").read().strip().splitlines()
busy = json.loads(lines[-1]) if lines else {}
def windows(bins):
    def window(lo, hi):
        xs = sorted(v for k, vs in bins.items() if lo <= int(k) < hi for v in vs)
        if not xs:
            return (0, 0, 0)
        return (xs[len(xs) // 2], xs[min(len(xs) - 1, int(len(xs) * 0.99))], len(xs))
    end = max(int(k) for k in bins) + 1 if bins else int(cut)
    return window(int(frozen) - 10, int(frozen)), window(int(frozen), int(cut) + 1), window(int(cut) + 1, end)
def show(w):
    b, d, a = w
    return f"{b[0]}/{b[1]} ms before ({b[2]}), {d[0]}/{d[1]} ms frozen ({d[2]}), {a[0]}/{a[1]} ms after ({a[2]})"
def steady(w):
    b, d, _ = w
    return d[2] > 0 and d[1] <= 2 * b[1] + 20
traffic = windows(json.load(open(f"{work}/latency.json"))["bins"])
probe = json.load(open(f"{work}/probe.json"))
probes = {k: windows(v) for k, v in sorted(probe.items())}
rss = [tuple(map(float, l.split())) for l in open(f"{work}/rss.txt") if len(l.split()) == 2]
r0 = int(open(f"{work}/rss-at-freeze").read().strip() or 0)
peak = max([r for t, r in rss if frozen <= t <= cut] or [r0])
last = rss[-1][1] if rss else 0
num = lambda x: int(x) if x.lstrip("-").isdigit() else -10**9
# Cut off (the node closed both and no longer counts them), counted (both as stalls), memory
# bounded (≤ 32 MiB over the freeze), the others' p99 not moved (≤ 2 × before + 20 ms).
ok = (num(c1) == num(c0) - 1 and num(s1) == num(s0) - 1 and num(st1) - num(st0) >= 2
      and ws_stall == "1" and sse_stall == "1"
      and peak - r0 <= 32 * 1024 and probes and all(steady(w) for w in probes.values()))
print("pass" if ok else "FAIL")
print(f"busy driver: {busy.get('ok', 0)} updates acked ok (asked {rate}/s; refused {json.dumps(busy.get('refused', {}))}, "
      f"{busy.get('timedOut', 0)} timed out); node 1 RSS {r0 / 1024:.0f} MiB at the freeze, peak {peak / 1024:.0f} MiB until "
      f"both were closed, {last / 1024:.0f} MiB at the end; location latency p50/p99 (deliveries) in the 10 s before the "
      f"freeze, while frozen and connected, after: light probe subscribers of ten other trips "
      + "; ".join(f"on {k} {show(w)}" for k, w in probes.items())
      + f"; the traffic's passengers (one saturated process) {show(traffic)}")
PY
  head -1 "$WORK/slow-report" >"$WORK/verdict"
  tail -n +2 "$WORK/slow-report" >"$WORK/extra"
}

[ -f "$OUT" ] || cat >"$OUT" <<'EOF'
| case | injected | load held | back after | status events acked ok, then missed | locations lost (at most once) | acks | crashed | result | when |
|---|---|---|---|---|---|---|---|---|---|
EOF
BUSY_RATE=${BUSY_RATE:-1000}
for c in $CASES; do
  NODE_FLAGS=(); LOC_MIN_INTERVAL=500; NODE1_LOG=""; BEFORE=""; CHECK=""; PRIVATE_PG=""; WITH_WORKER=""; REDIS_AOF=""; RELAY_CASE=""
  SECONDS_RUN=60
  case "$c" in postgres|slow) SECONDS_RUN=120 ;; esac
  [ "$SECONDS_ENV" -le 0 ] || SECONDS_RUN=$SECONDS_ENV
  case "$c" in
    drain) run_case "node drained (SIGTERM)" "SIGTERM to node 2 at 20 s, restarted 10 s later" fault_drain ;;
    kill) run_case "node killed (SIGKILL)" "SIGKILL to node 3 at 20 s, not restarted" fault_kill ;;
    redis-stop) run_case "Redis frozen (SIGSTOP 10 s)" "SIGSTOP to Redis at 20 s, SIGCONT 10 s later" fault_redis_stop ;;
    partition) RELAY_CASE="node 3 partitioned from Redis"
      run_case "node 3 partitioned from Redis" "node 3's Redis traffic held both ways for 10 s at 20 s (a relay), then healed" fault_partition ;;
    redis-kill) run_case "Redis killed (SIGKILL)" "SIGKILL to Redis at 20 s, restarted empty 5 s later" fault_redis_kill ;;
    redis-kill-aof) REDIS_AOF=1
      run_case "Redis killed (SIGKILL), AOF" "SIGKILL to Redis (appendonly yes, appendfsync always) at 20 s, restarted with its data 5 s later" fault_redis_kill ;;
    postgres) PRIVATE_PG=1; WITH_WORKER=1; CHECK=check_postgres
      # Every update sampled (the drivers tick at 1 Hz), in jobs of 100 rows: a backlog of many jobs.
      NODE_FLAGS=(--snapshot-interval-ms 1000 --snapshot-batch-rows 100)
      run_case "Postgres stopped, worker killed" "private Postgres stopped (pg_ctl -m immediate) at 20 s for 60 s; fleetcast-worker SIGKILLed while the backlog drains, restarted 2 s later" fault_postgres ;;
    slow) BEFORE=before_slow; CHECK=check_slow
      # The busy trip's driver may send fast: no per-driver interval, a high per-socket rate.
      LOC_MIN_INTERVAL=0
      # Node 1 logs why each Socket.IO session ends (socketioxide's disconnect reason).
      NODE1_LOG="info,socketioxide::socket=trace"
      NODE_FLAGS=(--location-max-per-minute 600000 --socket-events-per-sec 5000 --socket-events-burst 5000)
      run_case "slow consumer" "a websocket subscriber and an SSE stream of a busy trip (its driver at $BUSY_RATE updates/s) stop reading (SIGSTOP) at 40 s, straight on node 1" fault_slow ;;
    *) log "unknown case $c"; exit 2 ;;
  esac
  rm -rf "$WORK/redis-data"
done
