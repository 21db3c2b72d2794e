#!/usr/bin/env bash
# The fleetcast benchmark suite (issue 6), reproduced by one command:
#
#   loadtest/bench.sh            # everything, ~10 minutes on the 2-core reference machine
#   BENCH_ONLY="fanout" loadtest/bench.sh   # a subset: idle19k idle50k fanout burst polling generate
#   BENCH_ONLY="sse" loadtest/bench.sh      # opt-in: 1,000 SSE streams + 1,000 sockets, one order
#   BENCH_ONLY="cache" loadtest/bench.sh    # opt-in diagnostic: fanout with a 10-minute membership cache
#   BENCH_ONLY="areas ingest" loadtest/bench.sh  # opt-in: live areas (10,000 drivers at 1 Hz, with and
#                                           # without 50 dispatchers) and HTTP batch ingest on one node
#   BENCH_ONLY="console" loadtest/bench.sh  # opt-in: /console in Chromium, 10,000 drivers at 1 Hz
#   BENCH_ONLY="rediscluster" loadtest/bench.sh  # opt-in: fanout on one private Redis and on a private
#                                           # 3-primary Redis Cluster, alternately at each rate
#                                           # (BENCH_RC_RATES), Redis and node CPU per update;
#                                           # each run's <logs>/rc-*.window-cmdstats: Redis
#                                           # commands (calls, µs) per update over the window
#   BENCH_ONLY="spread" loadtest/bench.sh   # opt-in: 10,000 drivers on a private Redis Cluster: keys,
#                                           # shard channels and commands per primary
#   BENCH_ONLY="versus" loadtest/bench.sh   # opt-in (issue 16): fleetcast beside the Node.js baseline
#                                           # (../shared/baseline), alternately, each on a private
#                                           # Redis: idle memory per socket (BENCH_VS_IDLE_RUNS), fanout
#                                           # at BENCH_VS_RATES twice each, CPU per update of nodes and Redis;
#                                           # BENCH_VS_SYSTEMS="baseline fleetcast fleetcast:/tmp/old" adds
#                                           # an earlier build (before → after in one sitting);
#                                           # BENCH_VS_IDLE_SYSTEMS for the idle runs alone;
#                                           # BENCH_VS_IDLE=19000 BENCH_VS_IDLE_RAMP=3000
#                                           # BENCH_VS_IDLE_WORKERS=2: the connect target
#   BENCH_ONLY="step" loadtest/bench.sh     # opt-in (issue 16): the overload step, BENCH_STEP_RATE then
#                                           # twice it for BENCH_STEP_FOR s: shedding and recovery
#   BENCH_RATES="2000 5000" BENCH_SECONDS=10 loadtest/bench.sh
#   BENCH_PROFILE=1 loadtest/bench.sh       # also `perf record` node 1 during the top fanout rate
#   BENCH_NO_BUILD=1 loadtest/bench.sh      # use the binaries already in target/release
#   BENCH_RAMP=3000 loadtest/bench.sh       # fanout connection ramp (connections/s, default 1000)
#   BENCH_SOURCE_ADDRESSES=16 loadtest/bench.sh  # the load tool's websockets from 16 loopback
#                                           # source addresses (--source-addresses)
#
# It builds the release binaries, starts a 3-node cluster on 127.0.0.1:3101-3103 (plus a
# node on 3104 with the contract's default rate limits, for `burst`) on a unique Redis
# prefix and a fresh Postgres database, runs the standard scenarios, and writes markdown
# rows (machine, exact command, figures) to loadtest/results/suite.md. Everything it
# started is stopped by pid, its database dropped and its Redis keys deleted (by prefix;
# never a FLUSH), whatever happens. Loopback targets only.
#
# Needs: cargo, Redis on 127.0.0.1:6379, Postgres on 127.0.0.1:5432 (trust auth, user
# postgres; createdb/dropdb), jq, redis-cli, curl. Overridable: REDIS_URL, PG_URL.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT_DIR="$ROOT/loadtest/results"
OUT="$OUT_DIR/suite.md"
ONLY=${BENCH_ONLY:-"idle19k idle50k fanout burst polling generate"}
RATES=${BENCH_RATES:-"2000 5000 7000 8000 10000 15000"}
SECONDS_PER_RATE=${BENCH_SECONDS:-20}
DRIVERS=${BENCH_DRIVERS:-3000}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
PG=${PG_URL:-postgres://postgres@127.0.0.1:5432}
SECRET="bench-secret-$(date +%s)-$RANDOM$RANDOM"
PREFIX="bench-$$-$RANDOM"
DB="fleetcast_bench_$$_$RANDOM"
DB_URL="$PG/$DB"
LOGS=$(mktemp -d /tmp/fleetcast-bench.XXXXXX)
SERVER=${BENCH_SERVER:-"$ROOT/target/release/fleetcast"}
LT="$ROOT/target/release/fleetcast-loadtest"
NODE_PIDS=()
PERF_PID=""
SAMPLER_PID=""
PRIVATE_REDIS=""
PRIMARY_PIDS=()
PRIMARY_PORTS=()
REPLICA_PIDS=()

log() { echo "bench: $*" >&2; }
wants() { [[ " $ONLY " == *" $1 "* ]]; }

cleanup() {
    set +e
    [[ -n "$PERF_PID" ]] && kill -INT "$PERF_PID" 2>/dev/null
    [[ -n "$SAMPLER_PID" ]] && kill "$SAMPLER_PID" 2>/dev/null
    stop_nodes
    stop_private_redis
    dropdb -h 127.0.0.1 -U postgres --if-exists "$DB" 2>/dev/null && log "dropped database $DB"
    # Our keys only, by prefix, in batches (SCAN, never KEYS or FLUSH).
    redis-cli -u "$REDIS_URL" --scan --pattern "$PREFIX:*" 2>/dev/null | xargs -r -n 500 redis-cli -u "$REDIS_URL" del >/dev/null 2>&1
    log "logs in $LOGS"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_nodes() {
    local pid
    for pid in "${NODE_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${NODE_PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    NODE_PIDS=()
}

# start_node PORT [extra flags…]: a cluster node with the load-test limits unless overridden.
start_node() {
    local port=$1
    shift
    # BENCH_NODE_THREADS=N: each node's tokio runtime on N worker threads (several nodes share
    # the machine's cores here; tokio reads TOKIO_WORKER_THREADS).
    FLEETCAST_JWT_SECRET="$SECRET" TOKIO_WORKER_THREADS="${BENCH_NODE_THREADS:-$(nproc)}" "$SERVER" --bind "127.0.0.1:$port" --node-id "bench-$port" \
        --redis-url "${NODE_REDIS_URL:-$REDIS_URL}" --redis-prefix "$PREFIX" --database-url "$DB_URL" --log warn "$@" \
        >>"$LOGS/node-$port.log" 2>&1 &
    NODE_PIDS+=("$!")
}

LOAD_LIMITS=(--location-min-interval-ms 0 --location-max-per-minute 100000 --conn-rate-per-sec 0
    --socket-events-per-sec 1000 --socket-events-burst 1000 --http-rate-exempt-service)

# A fresh cluster for every scenario group: memory and allocator state of one run must not
# flatter or spoil the next.
# Extra arguments go to nodes 3101-3103.
start_cluster() {
    stop_nodes
    wait_quiet
    local port
    for port in 3101 3102 3103; do start_node "$port" "${LOAD_LIMITS[@]}" "$@"; done
    # Contract defaults, except the connection-flood limit (all clients share one address).
    start_node 3104 --conn-rate-per-sec 0
    for port in 3101 3102 3103 3104; do
        for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
        curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { log "node $port not ready"; exit 1; }
    done
    sleep 1
}

# Percent of both cores idle over two seconds: a busy machine (a build, another benchmark)
# makes every figure worse, so each row says how quiet the machine was just before.
idle_pct() {
    local a b
    a=($(head -1 /proc/stat)); sleep 2; b=($(head -1 /proc/stat))
    local idle=$(( (b[4] + b[5]) - (a[4] + a[5]) )) total=0 i
    for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
    echo $(( total > 0 ? 100 * idle / total : 0 ))
}

# Waits (up to BENCH_QUIET_WAIT s, default 300) for the machine to be at least 85 % idle.
wait_quiet() {
    local waited=0 pct
    while true; do
        pct=$(idle_pct)
        [[ $pct -ge 85 ]] && return 0
        if [[ $waited -ge ${BENCH_QUIET_WAIT:-300} ]]; then
            log "warning: machine still busy (${pct}% idle); measuring anyway"
            return 0
        fi
        log "machine busy (${pct}% idle); waiting"
        sleep 8
        waited=$((waited + 10))
    done
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# A Redis private to one run, so that its CPU is the run's alone: `redis` (one server on
# 27100), `cluster` (three primaries and three replicas on 27200-27205, from
# scripts/redis-cluster.sh) or `cluster0` (the three primaries alone: like for like with the
# one server, which has no replica). Sets NODE_REDIS_URL, PRIMARY_PIDS and REPLICA_PIDS.
start_private_redis() {
    stop_private_redis
    PRIVATE_REDIS="$LOGS/redis-$1-$RANDOM"
    mkdir -p "$PRIVATE_REDIS"
    PRIMARY_PIDS=()
    PRIMARY_PORTS=()
    REPLICA_PIDS=()
    if [[ "$1" == cluster* ]]; then
        local replicas=1 port
        [[ "$1" == cluster0 ]] && replicas=0
        # Redis's default node timeout: on two busy cores a 2 s one fails primaries over mid-run.
        NODE_REDIS_URL=$(NODE_TIMEOUT=15000 REPLICAS=$replicas WATCH=$$ "$ROOT/scripts/redis-cluster.sh" start 27200 "$PRIVATE_REDIS")
        for port in $(seq 27200 $((replicas == 1 ? 27205 : 27202))); do
            if redis-cli -p "$port" role | head -1 | grep -q master; then
                PRIMARY_PIDS+=("$(cat "$PRIVATE_REDIS/$port/pid")")
                PRIMARY_PORTS+=("$port")
            else
                REPLICA_PIDS+=("$(cat "$PRIVATE_REDIS/$port/pid")")
            fi
        done
    else
        (cd "$PRIVATE_REDIS" && redis-server --port 27100 --bind 127.0.0.1 --save '' --appendonly no \
            --daemonize yes --logfile log --pidfile "$PRIVATE_REDIS/pid")
        for _ in $(seq 100); do redis-cli -p 27100 ping >/dev/null 2>&1 && break; sleep 0.05; done
        PRIMARY_PIDS=("$(cat "$PRIVATE_REDIS/pid")")
        PRIMARY_PORTS=(27100)
        NODE_REDIS_URL=redis://127.0.0.1:27100
    fi
}

stop_private_redis() {
    [[ -z "$PRIVATE_REDIS" ]] && return 0
    local f pid
    for f in "$PRIVATE_REDIS"/pid "$PRIVATE_REDIS"/*/pid; do
        [[ -f "$f" ]] || continue
        pid=$(cat "$f")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        # The cluster script's watcher stops what the pid files name when this script ends:
        # nothing, once they are gone (a reused pid is never killed).
        rm -f "$f"
    done
    # The next run's servers take the same ports.
    local port
    for port in 27100 27200 27201 27202 27203 27204 27205; do
        for _ in $(seq 50); do ss -ltnH "sport = :$port" | grep -q . || break; sleep 0.1; done
    done
    PRIVATE_REDIS=""
    PRIMARY_PORTS=()
    unset NODE_REDIS_URL
}

# cpu_sampler FILE PID…: every 0.5 s a line "unix_ms ticks(pid)…" (user + system) until killed.
cpu_sampler() {
    local f=$1 line p
    shift
    while :; do
        line=$(date +%s%3N)
        for p in "$@"; do line+=" $(cpu_ticks "$p")"; done
        echo "$line" >>"$f"
        sleep 0.5
    done
}

# send_window JSON [SKIP]: "start_ms end_ms accepted" of the run's send window (its
# timeline's first to last second with updates sent, less its first SKIP seconds) and the
# updates accepted in it.
send_window() {
    jq -r --argjson k "${2:-0}" '.timelineStartUnixMs as $s | [.timeline[] | select(.sent > 0)] | .[$k:]
        | "\($s + .[0].t * 1000) \($s + (.[-1].t + 1) * 1000) \(map(.accepted) | add)"' "$1"
}

# cmdstats_sampler FILE PORT…: every second, per Redis port, lines "unix_ms port command
# calls usec" from `INFO commandstats`, until killed.
cmdstats_sampler() {
    local f=$1 p now
    shift
    while :; do
        now=$(date +%s%3N)
        for p in "$@"; do
            redis-cli -p "$p" INFO commandstats 2>/dev/null | tr -d '\r' | awk -v t="$now" -v p="$p" -F'[:=,]' \
                '/^cmdstat_/ { sub(/^cmdstat_/, "", $1); print t, p, $1, $3, $5 }' >>"$f" || true
        done
        sleep 1
    done
}

# window_cmdstats JSON SAMPLES: per command, calls and CPU µs (Redis's own count, summed
# over the ports) per accepted update over the run's send window, the costliest first.
window_cmdstats() {
    local range
    range=$(send_window "$1")
    awk -v r="$range" '
        BEGIN { split(r, a, " "); s = a[1]; e = a[2]; acc = a[3] }
        $1 <= s { bc[$2 " " $3] = $4; bu[$2 " " $3] = $5 }
        $1 >= e && (!($2 in first) || $1 == first[$2]) { first[$2] = $1; ec[$2 " " $3] = $4; eu[$2 " " $3] = $5 }
        END {
            for (k in ec) { split(k, q, " "); c[q[2]] += ec[k] - bc[k]; u[q[2]] += eu[k] - bu[k]; tu += eu[k] - bu[k] }
            printf "command calls/update usec/update (of %d accepted; all commands %.1f µs per update)\n", acc, tu / acc
            for (k in c) if (c[k] > 0) printf "%s %.3f %.2f\n", k, c[k] / acc, u[k] / acc
        }' "$2" | { read -r head; echo "$head"; sort -k3 -g -r; }
}

# window_cpu JSON SAMPLES [SKIP]: "accepted cpu_s(pid)…" over the run's send window (its
# timeline's first to last second with updates sent, less its first SKIP seconds): the
# updates accepted in it and each sampled process's CPU seconds between the samples around it.
window_cpu() {
    local range
    range=$(send_window "$1" "${3:-0}")
    awk -v r="$range" -v hz="$(getconf CLK_TCK)" '
        BEGIN { split(r, a, " "); s = a[1]; e = a[2] }
        $1 <= s { for (i = 2; i <= NF; i++) b[i] = $i }
        $1 >= e && !done { for (i = 2; i <= NF; i++) x[i] = $i; n = NF; done = 1 }
        END { printf "%s", a[3]; for (i = 2; i <= n; i++) printf " %.3f", (x[i] - b[i]) / hz; print "" }' "$2"
}
# per_update_cpu NAME NODES [SKIP]: the CPU per accepted update over NAME's send window
# (less its first SKIP seconds) from the sampler's file $LOGS/NAME.cpu, which lists the NODES
# node pids, then PRIMARY_PIDS, then REPLICA_PIDS: Redis summed over the primaries (each one
# apart), replicas, nodes.
per_update_cpu() {
    local w
    read -r -a w <<<"$(window_cpu "$LOGS/$1.json" "$LOGS/$1.cpu" "${3:-0}" 2>/dev/null || echo 0)"
    awk -v nn="$2" -v np="${#PRIMARY_PIDS[@]}" -v nr="${#REPLICA_PIDS[@]}" -v w="${w[*]}" 'BEGIN {
        n = split(w, a, " "); acc = a[1]; if (acc < 1) { print "no window"; exit }
        for (i = 2; i < 2 + nn; i++) nodes += a[i]
        f = 2 + nn
        for (i = f; i < f + np; i++) { prim += a[i]; shards = shards sprintf("%s%.1f", (i > f ? " / " : ""), a[i] * 1e6 / acc) }
        for (i = f + np; i <= n; i++) repl += a[i]
        printf "**Redis %.1f µs per accepted update** (%s %s)", prim * 1e6 / acc, (np > 1 ? "primaries" : "one server"), shards
        if (nr > 0) printf ", replicas %.1f µs", repl * 1e6 / acc
        printf "; **nodes %.1f µs per update**; over %d accepted updates in the send window", nodes * 1e6 / acc, acc }'
}
# stop_perf DATA TXT WHAT: ends the running `perf record` (if any) and writes its flat
# profile by symbol to TXT.
stop_perf() {
    [[ -n "$PERF_PID" ]] || return 0
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=""
    perf report -i "$1" --stdio --no-children --sort symbol 2>/dev/null | grep -v '^#' | grep '%' | head -60 >"$2" || true
    log "profile of $3: $2"
}
redis_pid() { pgrep -x redis-server | head -1 || true; }
# CPU seconds (user + system) of this shell's finished children, from `times`. It must run
# in the main shell (a `$(…)` subshell has children of its own), so it writes to a file.
children_cpu() {
    times >"$LOGS/times"
    tail -1 "$LOGS/times" | awk '{ s = 0; for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); s += p[1] * 60 + p[2] } printf "%.1f\n", s }' >"$LOGS/$1"
}

# row SCENARIO COMMAND FIGURES: one table row (pipes escaped).
row() {
    local cmd=${2//|/\\|}
    printf '| %s | `%s` | %s |\n' "$1" "$cmd" "$3" >>"$OUT"
}

# run_lt NAME ARGS…: runs the load tool with --json, keeps its JSON in $LOGS/NAME.json and
# prints the command as written in the table (binary path shortened, secret elided).
run_lt() {
    local name=$1
    shift
    log "$name: $(shown "$@")"
    "$LT" "$@" ${BENCH_SOURCE_ADDRESSES:+--source-addresses "$BENCH_SOURCE_ADDRESSES"} --json >"$LOGS/$name.json" \
        2>"$LOGS/$name.err" || log "$name exited non-zero (see $LOGS/$name.err)"
    tail -n 3 "$LOGS/$name.err" >&2 || true
}
shown() { local s="fleetcast-loadtest $*${BENCH_SOURCE_ADDRESSES:+ --source-addresses $BENCH_SOURCE_ADDRESSES}"; s=${s//$SECRET/\$SECRET}; s=${s//$ROOT\//}; echo "${s//$DB_URL/\$DB_URL}"; }

if [[ -z "${BENCH_NO_BUILD:-}" ]]; then
    log "building release binaries"
    cargo build --release -p fleetcast -p fleetcast-loadtest >&2
fi
ulimit -n "$(ulimit -Hn)" || true
createdb -h 127.0.0.1 -U postgres "$DB"
mkdir -p "$OUT_DIR"
{
    echo "## Benchmark suite, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "Machine: $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB RAM ($(uname -sr)); fleetcast $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+dirty'). Cluster: 3 nodes + Redis + Postgres + the load tool on this machine; nodes 3101-3103 with load-test limits (\`${LOAD_LIMITS[*]}\`), node 3104 with contract defaults."
    echo
    echo "| scenario | command | figures |"
    echo "|---|---|---|"
} >>"$OUT"

T="--target ws://127.0.0.1:3101 --target ws://127.0.0.1:3102 --target ws://127.0.0.1:3103"

if wants idle19k; then
    start_cluster
    args=(idle --target ws://127.0.0.1:3101 --connections 19000 --ramp 2000 --hold 10 --settle 5 --workers 2
        --pid "${NODE_PIDS[0]}" --secret "$SECRET")
    run_lt idle19k "${args[@]}"
    row "idle, 19,000 sockets on one node" "$(shown "${args[@]}")" "$(jq -r '"connected \(.connected)/\(.requested), failed \(.failed), dropped \(.dropped); **\(.rssPerSocketKib) KiB RSS per socket** (node \(.rssBeforeKib) → \(.rssAfterKib) KiB); connect p50 \(.connectMs.p50Ms) ms, p99 \(.connectMs.p99Ms) ms"' "$LOGS/idle19k.json" 2>/dev/null || echo 'run failed')"
fi

if wants idle50k; then
    start_cluster
    args=(idle $T --connections 50000 --ramp 2500 --hold 10 --settle 5 --workers 3
        --pid "${NODE_PIDS[0]}" --pid "${NODE_PIDS[1]}" --pid "${NODE_PIDS[2]}" --secret "$SECRET")
    run_lt idle50k "${args[@]}"
    row "idle, 50,000 sockets over 3 nodes" "$(shown "${args[@]}")" "$(jq -r '"connected \(.connected)/\(.requested), failed \(.failed) (\(.failures)), dropped \(.dropped); **\(.rssPerSocketKib) KiB RSS per socket** (3 nodes \(.rssBeforeKib) → \(.rssAfterKib) KiB); connect p50 \(.connectMs.p50Ms) ms, p99 \(.connectMs.p99Ms) ms"' "$LOGS/idle50k.json" 2>/dev/null || echo 'run failed')"
fi

fanout_row() {
    local name=$1 label=$2
    shift 2
    local rp pid i after tool_before tool_after hz cpu="" quiet
    local before=()
    quiet=$(idle_pct)
    [[ $quiet -lt 90 ]] && log "warning: machine only ${quiet}% idle before $name"
    rp=$(redis_pid)
    for pid in "${NODE_PIDS[@]:0:3}" $rp; do before+=("$(cpu_ticks "$pid")"); done
    children_cpu cpu0
    local t0=$SECONDS
    run_lt "$name" "$@"
    local wall=$((SECONDS - t0))
    children_cpu cpu1
    tool_before=$(cat "$LOGS/cpu0")
    tool_after=$(cat "$LOGS/cpu1")
    hz=$(getconf CLK_TCK)
    i=0
    for pid in "${NODE_PIDS[@]:0:3}" $rp; do
        after=$(cpu_ticks "$pid")
        cpu+="$(awk -v a="$after" -v b="${before[$i]}" -v hz="$hz" 'BEGIN{printf "%.0f", (a-b)/hz}') "
        i=$((i + 1))
    done
    cpu+="/ load tool $(awk -v a="$tool_after" -v b="$tool_before" 'BEGIN{printf "%.0f", a-b}'); machine ${quiet}% idle before"
    row "$label" "$(shown "$@")" "$(jq -r '"sent \(.achievedRate)/s, accepted \(.acceptedRate)/s over \(.sendWindowS) s; **e2e p50 \(.e2eMs.p50Ms) ms, p99 \(.e2eMs.p99Ms) ms** (max \(.e2eMs.maxMs)); ack p50 \(.ackMs.p50Ms) / p99 \(.ackMs.p99Ms) ms; **delivery \(.deliveryRatio)** (\(.receivedDeliveries)/\(.expectedDeliveries) received, \(.unexpectedDeliveries) of them of unacknowledged updates or repeated; \(.deliveriesPerS)/s; subscribers complete \(.subscribers.complete)/\(.subscribers.count), lowest \(.subscribers.minRatio)); ack errors \(.ackErrors); setup failures \(.setupFailures); polling subscribers \(.pollingPassengers)"' "$LOGS/$name.json" 2>/dev/null || echo 'run failed'); CPU seconds over the ${wall} s run incl. setup (nodes 1-3, redis / load tool): ${cpu}"
}

if wants fanout; then
    top=$(echo "$RATES" | tr ' ' '\n' | tail -1)
    for rate in $RATES; do
        start_cluster
        if [[ -n "${BENCH_PROFILE:-}" && "$rate" == "$top" ]]; then
            perf record -e cpu-clock -F 199 --call-graph dwarf,16384 -p "${NODE_PIDS[0]}" -o "$LOGS/perf-node1.data" >/dev/null 2>&1 &
            PERF_PID=$!
        fi
        args=(fanout $T --drivers "$DRIVERS" --passengers-per-trip 3 --rate "$rate" --duration "$SECONDS_PER_RATE"
            --ramp "${BENCH_RAMP:-1000}" --workers 2 --secret "$SECRET" --database-url "$DB_URL" --report "$OUT_DIR/fanout-$rate.html")
        fanout_row "fanout-$rate" "fanout ${rate} updates/s × 3 subscribers, ${DRIVERS} drivers" "${args[@]}"
        if [[ -n "$PERF_PID" ]]; then
            kill -INT "$PERF_PID" 2>/dev/null || true
            wait "$PERF_PID" 2>/dev/null || true
            PERF_PID=""
            perf report -i "$LOGS/perf-node1.data" --stdio --no-children --sort dso,symbol 2>/dev/null | grep -v '^#' | grep '%' | head -40 >"$LOGS/perf-node1.txt" || true
            log "profile of node 1 at $rate/s: $LOGS/perf-node1.txt"
        fi
    done
fi

# Diagnostic: the same fanout with the trip-membership cache kept for 10 minutes, which
# removes the database stampede every `--membership-cache-ms` (default 5 s) under load.
if wants cache; then
    for rate in ${BENCH_CACHE_RATES:-5000 7000}; do
        start_cluster --membership-cache-ms 600000
        args=(fanout $T --drivers "$DRIVERS" --passengers-per-trip 3 --rate "$rate" --duration "$SECONDS_PER_RATE"
            --ramp 3000 --workers 2 --secret "$SECRET" --database-url "$DB_URL")
        fanout_row "cache-$rate" "fanout ${rate}/s × 3, nodes with --membership-cache-ms 600000 (diagnostic)" "${args[@]}"
    done
fi

if wants burst; then
    start_cluster
    args=(burst --target ws://127.0.0.1:3104 --drivers 1 --in-flight 32 --duration 10 --passengers-per-trip 1
        --secret "$SECRET" --database-url "$DB_URL")
    run_lt burst "${args[@]}"
    row "burst, one driver as fast as acks allow, node with contract-default limits" "$(shown "${args[@]}")" "$(jq -r '"sent \(.achievedRate)/s, **accepted \(.accepted) of \(.sent)** (\(.acceptedRate)/s); refused: \(.ackErrors); **retryAfterMs p50 \(.retryAfterMs.p50Ms), p99 \(.retryAfterMs.p99Ms), max \(.retryAfterMs.maxMs)**; ack p99 \(.ackMs.p99Ms) ms; subscriber got \(.receivedDeliveries)/\(.expectedDeliveries)"' "$LOGS/burst.json" 2>/dev/null || echo 'run failed')"
fi

if wants polling; then
    start_cluster
    args=(fanout $T --drivers 1000 --passengers-per-trip 3 --rate 2000 --duration "$SECONDS_PER_RATE" --ramp 2000
        --polling-share 0.2 --workers 2 --secret "$SECRET" --database-url "$DB_URL")
    fanout_row polling "fanout 2,000 updates/s × 3, 20 % of subscribers on long-polling" "${args[@]}"
fi

if wants generate; then
    start_cluster
    args=(generate $T --drivers 2000 --every 1 --duration "$SECONDS_PER_RATE" --passengers-per-trip 2 --ramp 3000
        --workers 2 --secret "$SECRET" --database-url "$DB_URL")
    fanout_row generate "generate: 2,000 drivers on routes in Nairobi, every 1 s, × 2 subscribers" "${args[@]}"
fi

# Opt-in (not in the default list): one order's HTTP-published events fanned out to 1,000
# SSE streams and 1,000 Socket.IO subscribers on node 2, published on node 1.
if wants sse; then
    start_cluster
    args=(sse --target ws://127.0.0.1:3102 --publish-target http://127.0.0.1:3101 --streams 1000 --sockets 1000
        --events 200 --rate 20 --pid "${NODE_PIDS[1]}" --secret "$SECRET")
    run_lt sse "${args[@]}"
    row "sse, 200 order events at 20/s to 1,000 SSE streams + 1,000 sockets on another node" "$(shown "${args[@]}")" "$(jq -r '"**SSE p50 \(.sse.latencyMs.p50Ms) ms, p99 \(.sse.latencyMs.p99Ms) ms**, delivery \(.sse.deliveryRatio); **Socket.IO p50 \(.socketio.latencyMs.p50Ms) ms, p99 \(.socketio.latencyMs.p99Ms) ms**, delivery \(.socketio.deliveryRatio); streams held \(.sseStreamsHeld)/\(.sse.requested); published \(.published)/\(.events); setup failures \(.setupFailures); \(.rssPerConnectionKib) KiB RSS per connection"' "$LOGS/sse.json" 2>/dev/null || echo 'run failed')"
fi

# Opt-in: live areas (CONTRACT §7). The same drivers twice on fresh clusters, without and
# with 50 dispatchers watching areas of different sizes (viewer 0 the whole Nairobi box)
# spread over the three nodes: the CPU the areas add, frames per dispatcher per second,
# and the age of the positions they see.
if wants areas; then
    drivers=${BENCH_AREA_DRIVERS:-10000}
    start_cluster
    args=(generate $T --drivers "$drivers" --every 1 --duration "$SECONDS_PER_RATE" --passengers-per-trip 0
        --ramp 3000 --workers 2 --secret "$SECRET" --database-url "$DB_URL")
    fanout_row areas-base "generate: ${drivers} drivers every 1 s, no area subscriber" "${args[@]}"
    # The fan-out suite's cost at the same rate and fleet: the issue's yardstick.
    start_cluster
    fargs=(fanout $T --drivers "$drivers" --passengers-per-trip 3 --rate "$drivers" --duration "$SECONDS_PER_RATE"
        --ramp 3000 --workers 2 --secret "$SECRET" --database-url "$DB_URL")
    fanout_row areas-fanout "fanout: ${drivers} updates/s × 3 subscribers, ${drivers} drivers (yardstick)" "${fargs[@]}"
    start_cluster
    viewers=(areas $T --viewers 50 --interval-ms 1000 --duration $((SECONDS_PER_RATE + 20)) --secret "$SECRET")
    log "areas: $(shown "${viewers[@]}")"
    "$LT" "${viewers[@]}" --json >"$LOGS/areas-viewers.json" 2>"$LOGS/areas-viewers.err" &
    viewers_pid=$!
    sleep 3
    if [[ -n "${BENCH_PROFILE:-}" ]]; then
        perf record -e cpu-clock -F 199 --call-graph dwarf,16384 -p "${NODE_PIDS[0]}" -o "$LOGS/perf-areas.data" >/dev/null 2>&1 &
        PERF_PID=$!
    fi
    fanout_row areas-watched "generate: ${drivers} drivers every 1 s, 50 dispatchers watching areas" "${args[@]}"
    stop_perf "$LOGS/perf-areas.data" "$LOGS/perf-areas.txt" "node 1 with areas"
    wait "$viewers_pid" || log "areas viewers exited non-zero (see $LOGS/areas-viewers.err)"
    row "areas: 50 dispatchers, 1 s interval, beside the run above" "$(shown "${viewers[@]}")" "$(jq -r '"**frames/s per dispatcher mean \(.framesPerSMean), max \(.framesPerSMax)**; smallest gap between two frames \(.minGapMs) ms; **position age p50 \(.age.p50Ms) ms, p99 \(.age.p99Ms) ms** (max \(.age.maxMs), \(.age.count) positions shown); whole-box dispatcher: \(.entriesPerFrameWholeBox) drivers per frame; left \(.left); failures \(.failures)"' "$LOGS/areas-viewers.json" 2>/dev/null || echo 'run failed')"
fi

# Opt-in (issue 12): the fan-out suite on one private Redis and on a private 3-primary Redis
# Cluster (three replicas), alternately at each rate on fresh nodes: per accepted update, the
# CPU of Redis (summed over the primaries; replicas apart) and of the three nodes over the
# send window, beside p50/p99 and delivery.
if wants rediscluster; then
    for rate in ${BENCH_RC_RATES:-2000 4000 6000}; do
        for engine in ${BENCH_RC_ENGINES:-redis cluster0 cluster}; do
            start_private_redis "$engine"
            start_cluster
            name="rc-$engine-$rate"
            samples="$LOGS/$name.cpu"
            # A second pass of the same name starts its samples afresh (a fresh Redis counts
            # its commands from zero).
            : >"$samples"
            : >"$LOGS/$name.cmdstats-t"
            : >"$LOGS/$name.cmdstats"
            cpu_sampler "$samples" "${NODE_PIDS[@]:0:3}" "${PRIMARY_PIDS[@]}" "${REPLICA_PIDS[@]}" &
            SAMPLER_PID=$!
            cmdstats_sampler "$LOGS/$name.cmdstats-t" "${PRIMARY_PORTS[@]}" &
            CMDSTATS_PID=$!
            quiet=$(idle_pct)
            args=(fanout $T --drivers "$DRIVERS" --passengers-per-trip 3 --rate "$rate" --duration "$SECONDS_PER_RATE"
                --ramp "${BENCH_RAMP:-1000}" --workers 2 --secret "$SECRET" --database-url "$DB_URL")
            run_lt "$name" "${args[@]}"
            sleep 1.5
            kill "$CMDSTATS_PID" 2>/dev/null || true
            wait "$CMDSTATS_PID" 2>/dev/null || true
            window_cmdstats "$LOGS/$name.json" "$LOGS/$name.cmdstats-t" >"$LOGS/$name.window-cmdstats" 2>/dev/null || true
            log "Redis commands over the send window: $LOGS/$name.window-cmdstats"
            # Where the Redis CPU went, by command (whole run, setup included).
            for p in "${PRIMARY_PORTS[@]}"; do
                redis-cli -p "$p" INFO commandstats | sed "s/^/$p /" >>"$LOGS/$name.cmdstats" || true
            done
            sleep 1
            kill "$SAMPLER_PID" 2>/dev/null || true
            wait "$SAMPLER_PID" 2>/dev/null || true
            SAMPLER_PID=""
            cpu=$(per_update_cpu "$name" 3)
            # The same after the fleet came live: without the seconds in which every driver
            # sent its first update (presence derivations, first index writes), plus one.
            come_live=$(( (DRIVERS + rate - 1) / rate + 1 ))
            cpu="$cpu; after the first ${come_live} s (the fleet coming live): $(per_update_cpu "$name" 3 "$come_live")"
            case $engine in
                cluster) on="a 3-primary Redis Cluster with a replica each" ;;
                cluster0) on="a 3-primary Redis Cluster without replicas" ;;
                *) on="one Redis" ;;
            esac
            label="fanout ${rate}/s × 3 subscribers, ${DRIVERS} drivers, on $on"
            row "$label" "$(shown "${args[@]}") (nodes on ${NODE_REDIS_URL%%\?*})" "$(jq -r '"accepted \(.acceptedRate)/s of \(.achievedRate)/s; **e2e p50 \(.e2eMs.p50Ms) ms, p99 \(.e2eMs.p99Ms) ms**; **delivery \(.deliveryRatio)** (\(.receivedDeliveries)/\(.expectedDeliveries)); ack errors \(.ackErrors); setup failures \(.setupFailures)"' "$LOGS/$name.json" 2>/dev/null || echo 'run failed'); $cpu; machine ${quiet}% idle before"
            stop_nodes
            stop_private_redis
        done
    done
fi

# Opt-in (issue 12): 10,000 drivers of one tenant (one trip and one subscriber each) on a
# private Redis Cluster: each primary's keys and shard channels at the peak of the run and
# the commands it ran, against their mean.
if wants spread; then
    drivers=${BENCH_SPREAD_DRIVERS:-10000}
    start_private_redis cluster
    start_cluster
    spread="$LOGS/spread.samples"
    ( set +e
      while :; do
        line=""
        for p in "${PRIMARY_PORTS[@]}"; do
            line+="$(redis-cli -p "$p" DBSIZE) $(redis-cli -p "$p" PUBSUB SHARDCHANNELS | wc -l) "
        done
        echo "$line" >>"$spread"
        sleep 2
    done ) &
    SAMPLER_PID=$!
    calls() { redis-cli -p "$1" INFO commandstats | awk -F'calls=' '/^cmdstat_/ { split($2, c, ","); s += c[1] } END { print s + 0 }'; }
    before=()
    for p in "${PRIMARY_PORTS[@]}"; do before+=("$(calls "$p")"); done
    # A gentler connection ramp than fanout's: 20,000 sockets whose driver:connect each read
    # the database drain the nodes' 10-connection pools at 1,000/s on this machine.
    args=(fanout $T --drivers "$drivers" --passengers-per-trip 1 --rate "${BENCH_SPREAD_RATE:-2500}" --duration "$SECONDS_PER_RATE"
        --ramp "${BENCH_SPREAD_RAMP:-400}" --workers 2 --secret "$SECRET" --database-url "$DB_URL")
    run_lt spread "${args[@]}"
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""
    commands=""
    i=0
    for p in "${PRIMARY_PORTS[@]}"; do commands+="$(( $(calls "$p") - before[i] )) "; i=$((i + 1)); done
    # The sample with the most keys in all: "keys channels" per primary.
    peak=$(awk '{ t = 0; for (i = 1; i <= NF; i += 2) t += $i; if (t > best) { best = t; line = $0 } } END { print line }' "$spread")
    figures=$(awk -v peak="$peak" -v cmds="$commands" 'function spread(v, n,   i, m, d, w) {
            m = 0; for (i = 1; i <= n; i++) m += v[i]; m /= n; w = 0
            for (i = 1; i <= n; i++) { d = (v[i] - m) / (m > 0 ? m : 1) * 100; if (d < 0) d = -d; if (d > w) w = d }
            return sprintf("%.1f", w) }
        BEGIN {
            n = split(peak, p, " "); k = 0
            for (i = 1; i <= n; i += 2) { k++; keys[k] = p[i]; ch[k] = p[i + 1] }
            split(cmds, c, " ")
            printf "keys per primary at the peak %s / %s / %s (widest %s %% from the mean); ", keys[1], keys[2], keys[3], spread(keys, 3)
            printf "shard channels %s / %s / %s (%s %%); ", ch[1], ch[2], ch[3], spread(ch, 3)
            printf "commands over the run %s / %s / %s (%s %%)", c[1], c[2], c[3], spread(c, 3) }')
    row "spread: ${drivers} drivers of one tenant over a 3-primary Redis Cluster" "$(shown "${args[@]}")" "**$figures**; $(jq -r '"accepted \(.acceptedRate)/s, delivery \(.deliveryRatio), e2e p99 \(.e2eMs.p99Ms) ms, ack errors \(.ackErrors), setup failures \(.setupFailures)"' "$LOGS/spread.json" 2>/dev/null || echo 'run failed')"
    stop_nodes
    stop_private_redis
fi

# Opt-in (issue 16): fleetcast beside the Node.js baseline (Socket.IO 4.8 + the official Redis
# adapter, ../shared/baseline or BENCH_BASELINE), measured by the same load tool in the same
# sitting, alternately, each system on a Redis private to its run (27100) so that Redis's CPU is
# that system's alone. Idle: 10,000 sockets on one node, BENCH_VS_IDLE_RUNS times each (median
# in the write-up). Fanout: 3 nodes, BENCH_DRIVERS drivers, 3 subscribers per trip on the other
# nodes, at each of BENCH_VS_RATES, BENCH_VS_PASSES times each. The baseline has no database:
# the load tool runs it without --database-url (any trip id is accepted there).
if wants versus; then
    BASE_SRC=${BENCH_BASELINE:-$ROOT/../shared/baseline}
    BASE="$LOGS/baseline"
    mkdir -p "$BASE"
    cp "$BASE_SRC"/server.js "$BASE_SRC"/package.json "$BASE_SRC"/package-lock.json "$BASE/"
    (cd "$BASE" && npm ci --no-audit --no-fund --silent) || { log "npm ci for the baseline failed"; exit 1; }
    BT="--target ws://127.0.0.1:4001 --target ws://127.0.0.1:4002 --target ws://127.0.0.1:4003"
    FLEETCAST_BIN=$SERVER
    SYSTEMS=${BENCH_VS_SYSTEMS:-"baseline fleetcast"}
    # start_system SYSTEM N: N nodes of SYSTEM (baseline on 4001…, fleetcast on 3101…) on the
    # private Redis, load-test limits for fleetcast (the baseline has none).
    start_system() {
        stop_nodes
        wait_quiet
        local i port
        for i in $(seq 1 "$2"); do
            if [[ $1 == baseline ]]; then
                port=$((4000 + i))
                JWT_SECRET="$SECRET" PORT=$port NODE_ID="baseline-$port" REDIS_URL="$NODE_REDIS_URL" \
                    node "$BASE/server.js" >>"$LOGS/baseline-$port.log" 2>&1 &
                NODE_PIDS+=("$!")
            else
                port=$((3100 + i))
                # `fleetcast:PATH` runs the binary at PATH (an earlier build, for before → after).
                SERVER=${1#fleetcast:}
                [[ $1 == fleetcast ]] && SERVER=$FLEETCAST_BIN
                start_node "$port" "${LOAD_LIMITS[@]}"
            fi
        done
        for i in $(seq 1 "$2"); do
            if [[ $1 == baseline ]]; then port=$((4000 + i)); path=healthz; else port=$((3100 + i)); path=readyz; fi
            for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/$path" >/dev/null && break; sleep 0.2; done
            curl -sf "http://127.0.0.1:$port/$path" >/dev/null || { log "$1 node $port not ready"; exit 1; }
        done
        sleep 2
    }
    for run in $(seq 1 "${BENCH_VS_IDLE_RUNS:-3}"); do
        for system in ${BENCH_VS_IDLE_SYSTEMS:-$SYSTEMS}; do
            start_private_redis redis
            start_system "$system" 1
            port=$([[ $system == baseline ]] && echo 4001 || echo 3101)
            name="vs-idle-$(basename "$system")-$run"
            args=(idle --target "ws://127.0.0.1:$port" --connections "${BENCH_VS_IDLE:-10000}" --ramp "${BENCH_VS_IDLE_RAMP:-500}" --hold 10
                --settle 5 --workers "${BENCH_VS_IDLE_WORKERS:-1}" --pid "${NODE_PIDS[0]}" --secret "$SECRET")
            run_lt "$name" "${args[@]}"
            row "versus, idle run $run: $system, ${BENCH_VS_IDLE:-10000} sockets on one node" "$(shown "${args[@]}")" \
                "$(jq -r '"connected \(.connected)/\(.requested), failed \(.failed), dropped \(.dropped); **\(.rssPerSocketKib) KiB RSS per socket** (node \(.rssBeforeKib) → \(.rssAfterKib) KiB); connect p50 \(.connectMs.p50Ms) ms, p99 \(.connectMs.p99Ms) ms"' "$LOGS/$name.json" 2>/dev/null || echo 'run failed')"
            stop_nodes
            stop_private_redis
        done
    done
    for rate in ${BENCH_VS_RATES:-1000 2000 3000 4000 6000}; do
        for pass in $(seq 1 "${BENCH_VS_PASSES:-2}"); do
            for system in $SYSTEMS; do
                start_private_redis redis
                start_system "$system" 3
                name="vs-$(basename "$system")-$rate-$pass"
                cpu_sampler "$LOGS/$name.cpu" "${NODE_PIDS[@]:0:3}" "${PRIMARY_PIDS[@]}" &
                SAMPLER_PID=$!
                quiet=$(idle_pct)
                # BENCH_PROFILE=1: where Redis's CPU goes (perf on the private Redis for the run).
                if [[ -n "${BENCH_PROFILE:-}" ]]; then
                    perf record -e cpu-clock -F 499 -g -p "${PRIMARY_PIDS[0]}" -o "$LOGS/perf-$name.data" >/dev/null 2>&1 &
                    PERF_PID=$!
                fi
                if [[ $system == baseline ]]; then
                    args=(fanout $BT --drivers "$DRIVERS" --passengers-per-trip 3 --rate "$rate" --duration "$SECONDS_PER_RATE"
                        --ramp "${BENCH_VS_RAMP:-400}" --workers 2 --secret "$SECRET")
                else
                    args=(fanout $T --drivers "$DRIVERS" --passengers-per-trip 3 --rate "$rate" --duration "$SECONDS_PER_RATE"
                        --ramp "${BENCH_VS_RAMP:-400}" --workers 2 --secret "$SECRET" --database-url "$DB_URL")
                fi
                run_lt "$name" "${args[@]}"
                redis-cli -p 27100 INFO commandstats >"$LOGS/$name.cmdstats" || true
                stop_perf "$LOGS/perf-$name.data" "$LOGS/perf-$name.txt" "Redis under $system at $rate/s"
                sleep 1
                kill "$SAMPLER_PID" 2>/dev/null || true
                wait "$SAMPLER_PID" 2>/dev/null || true
                SAMPLER_PID=""
                cpu=$(per_update_cpu "$name" 3)
                row "versus, fanout ${rate}/s × 3 subscribers, ${DRIVERS} drivers, pass $pass: $system" "$(shown "${args[@]}")" \
                    "$(jq -r '"accepted \(.acceptedRate)/s of \(.achievedRate)/s; **e2e p50 \(.e2eMs.p50Ms) ms, p99 \(.e2eMs.p99Ms) ms**; **delivery \(.deliveryRatio)** (\(.receivedDeliveries)/\(.expectedDeliveries), \(.unexpectedDeliveries) of unacknowledged updates or repeated, \(.outOfOrder) out of order); ack errors \(.ackErrors); setup failures \(.setupFailures)"' "$LOGS/$name.json" 2>/dev/null || echo 'run failed'); $cpu; machine ${quiet}% idle before"
                stop_nodes
                stop_private_redis
            done
        done
    done
    SERVER=$FLEETCAST_BIN
fi

# Opt-in (issue 16): the overload step on fleetcast's 3 nodes (one private Redis): BENCH_STEP_RATE
# (a passing rate) for BENCH_STEP_AT s, twice that for BENCH_STEP_FOR s, then the passing rate
# again. Figures: acks past the deadline (`timeout:ack`), deliveries of updates not acked ok
# (an `UNAVAILABLE` that was applied anyway), out-of-order deliveries, and how many seconds
# after the step the per-second e2e p99 is back under 50 ms for good.
if wants step; then
    base=${BENCH_STEP_RATE:-3000}
    at=${BENCH_STEP_AT:-10}
    for_s=${BENCH_STEP_FOR:-10}
    duration=$((at + for_s + ${BENCH_STEP_AFTER:-20}))
    start_private_redis redis
    stop_nodes
    wait_quiet
    for port in 3101 3102 3103; do start_node "$port" "${LOAD_LIMITS[@]}"; done
    for port in 3101 3102 3103; do
        for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
    done
    sleep 2
    quiet=$(idle_pct)
    args=(fanout $T --drivers "$DRIVERS" --passengers-per-trip 3 --rate "$base" --step-rate $((2 * base))
        --step-at "$at" --step-for "$for_s" --duration "$duration" --ramp "${BENCH_RAMP:-1000}" --workers 2
        --secret "$SECRET" --database-url "$DB_URL")
    run_lt step "${args[@]}"
    # `end` is a jq keyword: the step's end is $stop.
    recovery=$(jq -r --argjson stop $((at + for_s)) '[.timeline[] | select(.sent > 0 and .t >= $stop)] as $t
        | ($t | map(select(.e2eP99Ms <= 50)) | first | .t) as $ok
        | if $ok == null then "never after the step"
          else "\($ok + 1 - $stop) s after the step ended (\($t | map(select(.t > $ok and .e2eP99Ms > 50)) | length) later seconds over 50 ms)" end' "$LOGS/step.json" 2>/dev/null || echo "?")
    row "overload step: ${base}/s, $((2 * base))/s from ${at} s for ${for_s} s, then ${base}/s; ${DRIVERS} drivers × 3 subscribers, 3 nodes, one Redis" "$(shown "${args[@]}")" \
        "$(jq -r '"accepted \(.accepted) of \(.sent); **ack errors \(.ackErrors)**; **delivery \(.deliveryRatio)** of acked-ok (\(.receivedDeliveries)/\(.expectedDeliveries)); **\(.unexpectedDeliveries) deliveries of updates not acked ok or repeated, \(.outOfOrder) out of order**; e2e p99 over the run \(.e2eMs.p99Ms) ms"' "$LOGS/step.json" 2>/dev/null || echo 'run failed'); **p99 ≤ 50 ms again ${recovery}**; machine ${quiet}% idle before"
    stop_nodes
    stop_private_redis
fi

# Opt-in: the SERVICE batch (`POST /api/v1/locations`, 1,000 updates per request) to one
# node, paced at the offered rate.
# Opt-in: the operations console (/console) in Debian's Chromium while a fleet streams at
# 1 Hz over the three nodes: frames and positions the page receives per second and its
# main-thread time per second (tests/js/console-bench.mjs; needs `npm ci --prefix tests/js`).
if wants console; then
    drivers=${BENCH_CONSOLE_DRIVERS:-10000}
    # Where the fleet streams: "embedded" (default: one node, in-memory engine, SQLite — the
    # fleet and the browser fit this 2-core machine) or "cluster" (three nodes, Redis, Postgres).
    if [[ "${BENCH_CONSOLE_MODE:-embedded}" == cluster ]]; then
        start_cluster
        targets=$T
        db=$DB_URL
        where="over 3 nodes"
    else
        stop_nodes
        wait_quiet
        db="sqlite://$LOGS/console.db?mode=rwc"
        FLEETCAST_JWT_SECRET="$SECRET" "$SERVER" --bind 127.0.0.1:3105 --node-id bench-3105 --database-url "$db" \
            --log warn "${LOAD_LIMITS[@]}" >>"$LOGS/node-3105.log" 2>&1 &
        NODE_PIDS+=("$!")
        for _ in $(seq 100); do curl -sf http://127.0.0.1:3105/readyz >/dev/null && break; sleep 0.2; done
        targets="--target ws://127.0.0.1:3105"
        where="on one embedded node"
    fi
    # A slower connection ramp than the areas group: 10,000 driver:connect at 3,000/s drain the
    # nodes' database pools (issue 16) and most drivers never start.
    gen=(generate $targets --drivers "$drivers" --every 1 --duration $((SECONDS_PER_RATE + 60)) --passengers-per-trip 0
        --ramp "${BENCH_CONSOLE_RAMP:-800}" --workers 2 --secret "$SECRET" --database-url "$db")
    log "console: $(shown "${gen[@]}")"
    "$LT" "${gen[@]}" --json >"$LOGS/console-gen.json" 2>"$LOGS/console-gen.err" &
    gen_pid=$!
    token=$("$SERVER" token --jwt-secret "$SECRET" --sub bench-ops --role ADMIN --ttl 1h)
    first=${targets#--target ws://}
    first=${first%% *}
    quiet=$(idle_pct)
    URL="http://$first" TOKEN="$token" SECONDS="$SECONDS_PER_RATE" EXPECT="$drivers" \
        node "$ROOT/tests/js/console-bench.mjs" >"$LOGS/console.json" 2>"$LOGS/console.err" || log "console bench failed (see $LOGS/console.err)"
    wait "$gen_pid" || log "generate exited non-zero (see $LOGS/console-gen.err)"
    row "console: /console in Chromium, ${drivers} drivers at 1 Hz ${where}" \
        "$(shown "${gen[@]}") + URL=http://$first SECONDS=$SECONDS_PER_RATE node tests/js/console-bench.mjs" \
        "$(jq -r '"**\(.framesPerS) frames/s**, \(.positionsPerS) positions/s, \(.driversShown) drivers on the map; **main thread \(.mainThreadPct) %** of each second (script \(.scriptPct) %, layout \(.layoutPct) %; map drawing \(.drawMsPerS) ms/s); JS heap \(.heapMb) MB; waited \(.waitedS) s for the fleet, measured \(.wallS) s"' "$LOGS/console.json" 2>/dev/null || echo 'run failed'); generate: $(jq -r '"accepted \(.acceptedRate)/s of \(.achievedRate)/s sent, ack errors \(.ackErrors), setup failures \(.setupFailures)"' "$LOGS/console-gen.json" 2>/dev/null); machine ${quiet}% idle before"
fi

if wants ingest; then
    for rate in ${BENCH_INGEST_RATES:-20000 30000}; do
        start_cluster
        args=(ingest --target http://127.0.0.1:3101 --drivers "$rate" --batch 1000 --concurrency 16 --every 1
            --duration "$SECONDS_PER_RATE" --secret "$SECRET")
        quiet=$(idle_pct)
        run_lt "ingest-$rate" "${args[@]}"
        row "ingest: ${rate} updates/s offered in batches of 1,000 to one node" "$(shown "${args[@]}")" "$(jq -r '"**accepted \(.acceptedPerS)/s** over \(.sendWindowS) s (\(.updates) updates in \(.batches) batches: \(.outcomes)); batch p50 \(.batchMs.p50Ms) ms, p99 \(.batchMs.p99Ms) ms"' "$LOGS/ingest-$rate.json" 2>/dev/null || echo 'run failed'); machine ${quiet}% idle before"
    done
fi

echo >>"$OUT"
log "rows appended to $OUT"
