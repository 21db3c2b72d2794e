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
#   postgres, 90 s for slow), KEEP=1 keeps the run's directory (logs),
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
NODE_FLAGS=()   # a case's extra node flags (last wins over the defaults below)
start_node() { # index 0..2; node 3 reaches Redis through the relay when one runs
  local i=$1 port=${NODE_PORTS[$1]} rport=$REDIS_PORT
  if [ "$i" = 2 ] && [ -n "${PIDS[relay]:-}" ]; then rport=$RELAY_PORT; fi
  FLEETCAST_JWT_SECRET=$SECRET "$SERVER" --bind "127.0.0.1:$port" --node-id "fault-$((i + 1))" \
    --redis-url "redis://127.0.0.1:$rport" --redis-prefix "$PREFIX" --database-url "$PG/$DB" \
    --trust-forwarded-for --conn-rate-per-sec 0 --location-min-interval-ms "$LOC_MIN_INTERVAL" \
    --max-connections-per-user 50 "${NODE_FLAGS[@]}" >>"$WORK/node$i.log" 2>&1 &
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
  # The slow case's busy trip (not in trips.txt: its driver and readers are faults/slow.mjs).
  echo "INSERT INTO trips (tenant, id, driver_id, title, total_seats, available_seats) VALUES ('default', 'tbusy', 'dbusy', 'fault', 10, 10);" >>"$sql"
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
  sleep "$(echo "10 - ($(date +%s.%N) - $t0)" | bc)"
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
# --- postgres: the private Postgres stopped for 60 s, the worker SIGKILLed mid-backlog ---
PG_BACK_AT=""
snap_sql() { psql "$PG/$DB" -XAtF ' ' -v ON_ERROR_STOP=1 -c "$1" 2>/dev/null; }
fault_postgres() {
  stop_private_pg immediate   # every backend and the postmaster at once, as a crash; port closed
  local t0; t0=$(now)
  sleep 58
  local held refused; held=$(metric_nodes fleetcast_snapshot_buffer_rows)
  refused=$(metric_nodes fleetcast_snapshot_push_failures_total)
  sleep "$(echo "60 - ($(now) - $t0)" | bc)"
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
SLOW_AT=""; SLOW_CUT_AT=""
before_slow() {
  URL="http://127.0.0.1:$LB_PORT" SECRET=$SECRET BUSY_TRIP=tbusy BUSY_DRIVER=dbusy RATE=$BUSY_RATE \
    node faults/slow.mjs driver >"$WORK/busy.out" 2>"$WORK/busy.err" &
  PIDS[busy]=$!
  URL="http://127.0.0.1:${NODE_PORTS[0]}" SECRET=$SECRET BUSY_TRIP=tbusy BUSY_DRIVER=dbusy READER=slow-reader \
    node faults/slow.mjs reader >"$WORK/reader.out" 2>"$WORK/reader.err" &
  PIDS[reader]=$!
  for _ in $(seq 1 200); do grep -q ready "$WORK/reader.out" && break; sleep 0.1; done
  grep -q ready "$WORK/reader.out" || { log "slow reader not ready"; cat "$WORK/reader.err" "$WORK/busy.err" >&2; exit 1; }
  # Node 1's resident memory, every second.
  ( while :; do echo "$(date +%s.%N) $(rss_kib "${PIDS[node0]}")" >>"$WORK/rss.txt"; sleep 1; done ) &
  PIDS[rss]=$!
}
fault_slow() {
  local c0 s0 st0 r0
  c0=$(stats_of 0 connections); s0=$(stats_of 0 sseStreams); st0=$(metric_of "${NODE_PORTS[0]}" fleetcast_connections_stalled_total)
  r0=$(rss_kib "${PIDS[node0]}")
  local sse_slow0 frames0; sse_slow0=$(metric_of "${NODE_PORTS[0]}" fleetcast_sse_slow_clients_total)
  frames0=$(metric_of "${NODE_PORTS[0]}" fleetcast_socket_frames_dropped_total)
  kill -STOP "${PIDS[reader]}"
  SLOW_AT=$(now)
  local st c s first="" ws_gone="" sse_gone=""
  for _ in $(seq 1 240); do
    st=$(metric_of "${NODE_PORTS[0]}" fleetcast_connections_stalled_total)
    c=$(stats_of 0 connections); s=$(stats_of 0 sseStreams)
    [ -n "$ws_gone" ] || { [ "$c" != "?" ] && [ "$c" -lt "$c0" ] && ws_gone=$(since "$SLOW_AT"); }
    [ -n "$sse_gone" ] || { [ "$s" != "?" ] && [ "$s" -lt "$s0" ] && sse_gone=$(since "$SLOW_AT"); }
    [ -n "$first" ] || { [ "$st" != "?" ] && [ "$st" -gt "$st0" ] && first=$(since "$SLOW_AT"); }
    if [ "$st" != "?" ] && [ "$st" -ge $((st0 + 2)) ] && [ -n "$ws_gone" ] && [ -n "$sse_gone" ]; then break; fi
    sleep 0.5
  done
  SLOW_CUT_AT=$(now)
  local c1 s1 st1
  c1=$(stats_of 0 connections); s1=$(stats_of 0 sseStreams); st1=$(metric_of "${NODE_PORTS[0]}" fleetcast_connections_stalled_total)
  local sse_slow frames; sse_slow=$(metric_of "${NODE_PORTS[0]}" fleetcast_sse_slow_clients_total)
  frames=$(metric_of "${NODE_PORTS[0]}" fleetcast_socket_frames_dropped_total)
  kill -CONT "${PIDS[reader]}"
  sleep 2
  kill "${PIDS[reader]}" 2>/dev/null || true
  wait "${PIDS[reader]}" 2>/dev/null || true
  unset 'PIDS[reader]'
  local seen; seen=$(grep -E '^(ws-|sse-)' "$WORK/reader.out" | sort | uniq -c | awk '{$1=$1; print}' | paste -sd';' | sed 's/;/; /g')
  echo "$st0 $st1 $c0 $c1 $s0 $s1 $r0" >"$WORK/slow-counts"
  echo "reader frozen at 20 s: its websocket gone from node 1 after ${ws_gone:-never} s, its SSE stream after ${sse_gone:-never} s; fleetcast_connections_stalled_total $st0 → $st1 (first after ${first:-never} s), fleetcast_sse_slow_clients_total $sse_slow0 → $sse_slow, fleetcast_socket_frames_dropped_total $frames0 → $frames; node 1 connections $c0 → $c1, SSE streams $s0 → $s1; what the reader saw after SIGCONT: ${seen:-nothing}" >"$WORK/back"
}
check_slow() {
  kill -TERM "${PIDS[busy]}" 2>/dev/null || true
  wait "${PIDS[busy]}" 2>/dev/null || true
  unset 'PIDS[busy]'
  kill "${PIDS[rss]}" 2>/dev/null || true
  wait "${PIDS[rss]}" 2>/dev/null || true
  unset 'PIDS[rss]'
  python3 - "$WORK" "$SLOW_AT" "$SLOW_CUT_AT" "$BUSY_RATE" <<'PY' >"$WORK/slow-report"
import json, sys
work, frozen, cut, rate = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
st0, st1, c0, c1, s0, s1, r0 = open(f"{work}/slow-counts").read().split()
lines = open(f"{work}/busy.out").read().strip().splitlines()
busy = json.loads(lines[-1]) if lines else {}
bins = json.load(open(f"{work}/latency.json"))["bins"]
def window(lo, hi):
    xs = sorted(v for k, vs in bins.items() if lo <= int(k) < hi for v in vs)
    if not xs:
        return (0, 0, 0)
    return (xs[len(xs) // 2], xs[min(len(xs) - 1, int(len(xs) * 0.99))], len(xs))
end = max(int(k) for k in bins) + 1 if bins else int(cut)
before = window(int(frozen) - 10, int(frozen))
during = window(int(frozen), int(cut) + 1)
after = window(int(cut) + 1, end)
rss = [tuple(map(float, l.split())) for l in open(f"{work}/rss.txt") if len(l.split()) == 2]
r0 = int(r0)
peak = max([r for t, r in rss if frozen <= t <= cut] or [r0])
last = rss[-1][1] if rss else 0
num = lambda x: int(x) if x.lstrip("-").isdigit() else -10**9
ok = (num(st1) - num(st0) >= 2 and num(c1) == num(c0) - 1 and num(s1) == num(s0) - 1
      and peak - r0 <= 32 * 1024 and during[2] > 0 and during[1] <= 2 * before[1] + 20)
print("pass" if ok else "FAIL")
print(f"busy driver: {busy.get('ok', 0)} updates acked ok (asked {rate}/s; refused {json.dumps(busy.get('refused', {}))}, "
      f"{busy.get('timedOut', 0)} timed out); node 1 RSS {r0 / 1024:.0f} MiB at the freeze, peak {peak / 1024:.0f} MiB while "
      f"frozen, {last / 1024:.0f} MiB at the end; the other passengers' location latency p50/p99 "
      f"{before[0]}/{before[1]} ms in the 10 s before ({before[2]} deliveries), {during[0]}/{during[1]} ms while the reader was "
      f"frozen ({during[2]}), {after[0]}/{after[1]} ms after the cut-off ({after[2]})")
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
  NODE_FLAGS=(); LOC_MIN_INTERVAL=500; BEFORE=""; CHECK=""; PRIVATE_PG=""; WITH_WORKER=""; REDIS_AOF=""; RELAY_CASE=""
  SECONDS_RUN=60
  case "$c" in postgres) SECONDS_RUN=120 ;; slow) SECONDS_RUN=90 ;; esac
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
      NODE_FLAGS=(--location-max-per-minute 600000 --socket-events-per-sec 5000 --socket-events-burst 5000)
      run_case "slow consumer" "a websocket subscriber and an SSE stream of a busy trip (its driver at $BUSY_RATE updates/s) stop reading (SIGSTOP) at 20 s, straight on node 1" fault_slow ;;
    *) log "unknown case $c"; exit 2 ;;
  esac
  rm -rf "$WORK/redis-data"
done
