#!/usr/bin/env bash
# The soak (RELIABILITY.md, "a 30-minute soak with connection churn"): 2 fleetcast nodes in
# cluster mode, a private redis-server and a fresh Postgres database, under moderate steady
# traffic plus connection churn from faults/soak.mjs (official socket.io-client, SSE over
# Node's fetch), connected directly to both nodes. Every 10 s it samples each node's
# resident memory (VmRSS), open files (/proc/PID/fd, by kind), connections (admin stats)
# and the Redis keys under the run's prefix (by family). After the load it keeps sampling
# until the keys and open files are back at their pre-load baseline (at most COOLDOWN s).
# Prints a JSON summary and appends one row to faults/soak-results.md.
#
#   faults/soak.sh                  # 30 minutes
#   MINUTES=3 faults/soak.sh        # a short try (warm-up point at minute 1)
#
# env: MINUTES (30), WARMUP_MIN (5, or 1 when MINUTES < 10), TRIPS (300: 300 drivers at
#      1 Hz, 600 passengers), CHURN_PER_SEC (25), SSE_STREAMS (6), HISTORY_WINDOW_MS
#      (120000, so every key family's TTL is ≤ 150 s), COOLDOWN (300), FLEETCAST_BIN
#      (/tmp/fcbin/fleetcast), REDIS_PORT (6691), PGURL, OUT, KEEP=1 keeps the work dir;
#      to tell which part of the load grows what: STEADY=0 (churn only), STATUS_EVERY_MS
#      (10000; a driver's `driver:status` interval, 1000000000 = none).
# Criteria (all must hold): each node's median RSS over the last minute of load is < 5 %
# above its median over the minute after warm-up; after the load, each node's open files
# other than its Postgres pool connections (bounded by --db-max-connections, closed by the
# pool's idle timeout) are back to the baseline, and the Redis key count is back to the
# baseline; 0 load errors (soak.mjs), 0 WARN/ERROR log lines and no panic during the load
# and the cool-down, no node exited.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MINUTES=${MINUTES:-30}
if [ -z "${WARMUP_MIN:-}" ]; then if [ "$MINUTES" -lt 10 ]; then WARMUP_MIN=1; else WARMUP_MIN=5; fi; fi
TRIPS=${TRIPS:-300}
CHURN_PER_SEC=${CHURN_PER_SEC:-25}
SSE_STREAMS=${SSE_STREAMS:-6}
HISTORY_WINDOW_MS=${HISTORY_WINDOW_MS:-120000}
COOLDOWN=${COOLDOWN:-300}
SERVER=${FLEETCAST_BIN:-/tmp/fcbin/fleetcast}
REDIS_PORT=${REDIS_PORT:-6691}
PG=${PGURL:-postgres://postgres@127.0.0.1:5432}
OUT=${OUT:-faults/soak-results.md}
SECRET=fleetcast-soak-secret-0123456789abcdef
NODE_PORTS=(3511 3512)
WORK=$(mktemp -d /tmp/fcsoak.XXXXXX)
PREFIX=fcsoak$RANDOM$RANDOM
DB=""
log() { printf '== %s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

[ -x "$SERVER" ] || { log "no fleetcast binary at $SERVER (set FLEETCAST_BIN)"; exit 2; }
[ -d faults/node_modules/socket.io-client ] || npm ci --prefix faults --no-audit --no-fund >/dev/null
for p in "${NODE_PORTS[@]}" "$REDIS_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then log "port $p is taken"; exit 2; fi
done

declare -A PIDS=()
cleanup() {
  echo stop >"$WORK/phase" 2>/dev/null || true
  for k in "${!PIDS[@]}"; do kill "${PIDS[$k]}" 2>/dev/null || true; done
  for k in "${!PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "${PIDS[$k]}" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "${PIDS[$k]}" 2>/dev/null || true
  done
  # Only the database this run created.
  [ -n "$DB" ] && psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  if [ -n "${KEEP:-}" ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Redis (private, no persistence), database, nodes.
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
  >"$WORK/redis.log" 2>&1 &
PIDS[redis]=$!
for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
DB_NAME=fcsoak_$(date +%s)_$RANDOM
psql "$PG/postgres" -qc "CREATE DATABASE $DB_NAME" >/dev/null
DB=$DB_NAME

for i in 0 1; do
  extra=()
  [ "$i" = 0 ] && extra=(--in-process-worker)
  FLEETCAST_JWT_SECRET=$SECRET "$SERVER" --bind "127.0.0.1:${NODE_PORTS[$i]}" --node-id "soak-$((i + 1))" \
    --redis-url "redis://127.0.0.1:$REDIS_PORT" --redis-prefix "$PREFIX" --database-url "$PG/$DB" \
    --conn-rate-per-sec 0 --history-window-ms "$HISTORY_WINDOW_MS" --log-format json "${extra[@]}" \
    >"$WORK/node$i.log" 2>&1 &
  PIDS[node$i]=$!
done
for i in 0 1; do
  ok=""
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${NODE_PORTS[$i]}/readyz")" = 200 ] && { ok=1; break; }
    sleep 0.1
  done
  [ -n "$ok" ] || { log "node $i not ready"; tail "$WORK/node$i.log" >&2; exit 1; }
done

# Trips: driver d$i, steady passengers p$i-a/b, churn passengers c$i-a/b (all CONFIRMED).
{
  echo "BEGIN;"
  for i in $(seq 1 "$TRIPS"); do
    echo "t$i d$i p$i-a p$i-b c$i-a c$i-b" >>"$WORK/trips.txt"
    echo "INSERT INTO trips (tenant, id, driver_id, title, total_seats, available_seats) VALUES ('default', 't$i', 'd$i', 'soak', 10, 6);"
    for s in p-a p-b c-a c-b; do
      echo "INSERT INTO bookings (tenant, id, trip_id, passenger_id, status) VALUES ('default', 'b$i$s', 't$i', '${s%-*}$i-${s#*-}', 'CONFIRMED');"
    done
  done
  echo "COMMIT;"
} >"$WORK/trips.sql"
psql "$PG/$DB" -q -v ON_ERROR_STOP=1 -f "$WORK/trips.sql" >/dev/null

ADMIN=$(node -e '
  const c=require("node:crypto");const b=o=>Buffer.from(JSON.stringify(o)).toString("base64url");
  const h=b({alg:"HS256",typ:"JWT"}),p=b({sub:"soak-admin",role:"ADMIN",exp:Math.floor(Date.now()/1e3)+86400});
  console.log(h+"."+p+"."+c.createHmac("sha256",process.argv[1]).update(h+"."+p).digest("base64url"))' "$SECRET")

# The sampler: one JSON line every 10 s into samples.ndjson, tagged with the phase.
cat >"$WORK/sample.py" <<'PY'
import json, os, subprocess, sys, time, urllib.request
work, redis_port, prefix, admin = sys.argv[1:5]
nodes = [(int(p), int(port)) for p, port in (a.split(":") for a in sys.argv[5:])]
redis_port = int(redis_port)

def tcp_table():
    t = {}
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(f).read().splitlines()[1:]
        except OSError:
            continue
        for l in lines:
            c = l.split()
            t[c[9]] = (int(c[1].split(":")[1], 16), int(c[2].split(":")[1], 16), c[3])
    return t

def fds(pid, port, tcp):
    kinds = {}
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        n += 1
        if target.startswith("socket:["):
            e = tcp.get(target[8:-1])
            if e is None: k = "socket(other)"
            elif e[0] == port and e[2] == "0A": k = "listen"
            elif e[0] == port: k = "clients"
            elif e[1] == 5432: k = "postgres"
            elif e[1] == redis_port: k = "redis"
            else: k = "tcp(other)"
        elif target.startswith("anon_inode:"): k = target[11:].strip("[]")
        elif target.startswith("pipe:"): k = "pipe"
        else: k = "file"
        kinds[k] = kinds.get(k, 0) + 1
    return n, kinds

def rss_kb(pid):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS:"):
            return int(l.split()[1])

def stats(port):
    try:
        r = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/admin/stats", headers={"authorization": f"Bearer {admin}"})
        s = json.load(urllib.request.urlopen(r, timeout=3))["node"]
        return s["connections"], s["sseStreams"]
    except Exception as e:
        return None, None

def gauge(port, name):
    try:
        for l in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3).read().decode().splitlines():
            if l.startswith(name + "{") or l.startswith(name + " "):
                return float(l.rsplit(" ", 1)[1])
    except Exception:
        return None
    return None

def keys():
    r = subprocess.run(["redis-cli", "-p", str(redis_port), "--scan", "--pattern", prefix + ":*"],
                       capture_output=True, text=True, timeout=20)
    if r.returncode != 0:
        return None, {"scanFailed": r.stderr.strip()[:200]}
    out = [k for k in r.stdout.split("\n") if k]  # not split(): names hold \x1f, which Python counts as space
    fam = {}
    for k in out:
        f = k[len(prefix) + 1:].split(":")[0]
        fam[f] = fam.get(f, 0) + 1
    return len(out), fam

t0 = time.time()
while True:
    phase = open(f"{work}/phase").read().strip()
    if phase == "stop":
        break
    tick = time.time()
    tcp = tcp_table()
    row = {"t": round(tick - t0, 1), "phase": phase, "nodes": []}
    for pid, port in nodes:
        try:
            n, kinds = fds(pid, port, tcp)
            row["nodes"].append({"rssKb": rss_kb(pid), "fds": n, "fdKinds": kinds})
        except OSError:
            row["nodes"].append({"rssKb": None, "fds": None, "fdKinds": {}, "gone": True})
    for (pid, port), nd in zip(nodes, row["nodes"]):
        nd["connections"], nd["sseStreams"] = stats(port)
        nd["roomSubscriptions"] = gauge(port, "fleetcast_room_subscriptions")
    row["keys"], row["families"] = keys()
    row["loadavg"] = float(open("/proc/loadavg").read().split()[0])  # the machine's, shared
    try:
        info = subprocess.run(["redis-cli", "-p", str(redis_port), "info", "memory"], capture_output=True, text=True, timeout=5).stdout
        row["redisUsedMemory"] = int([l for l in info.splitlines() if l.startswith("used_memory:")][0].split(":")[1])
    except Exception:
        pass
    with open(f"{work}/samples.ndjson", "a") as f:
        f.write(json.dumps(row) + "\n")
    time.sleep(max(0.0, 10 - (time.time() - tick)))
PY

echo baseline >"$WORK/phase"
python3 "$WORK/sample.py" "$WORK" "$REDIS_PORT" "$PREFIX" "$ADMIN" \
  "${PIDS[node0]}:${NODE_PORTS[0]}" "${PIDS[node1]}:${NODE_PORTS[1]}" &
PIDS[sampler]=$!
log "baseline (30 s idle), then $MINUTES min of load: $TRIPS drivers at 1 Hz, $((TRIPS * 2)) passengers, churn $CHURN_PER_SEC/s, $SSE_STREAMS SSE streams; work dir $WORK"
sleep 31
LOG_MARK=()
for i in 0 1; do LOG_MARK[$i]=$(wc -l <"$WORK/node$i.log"); done

echo load >"$WORK/phase"
URLS="http://127.0.0.1:${NODE_PORTS[0]},http://127.0.0.1:${NODE_PORTS[1]}" SECRET=$SECRET \
  TRIPS_FILE=$WORK/trips.txt SECONDS=$((MINUTES * 60)) CHURN_PER_SEC=$CHURN_PER_SEC SSE_STREAMS=$SSE_STREAMS \
  STEADY=${STEADY:-1} STATUS_EVERY_MS=${STATUS_EVERY_MS:-10000} node faults/soak.mjs >"$WORK/load.json" 2>"$WORK/load.log" &
PIDS[load]=$!
wait "${PIDS[load]}" || log "the load process exited with $?"
unset 'PIDS[load]'
log "load done: $(tail -c 600 "$WORK/load.json")"

# Cool-down: until keys and open files are back (checked by the summary's rule), at most COOLDOWN s.
echo cooldown >"$WORK/phase"
cat >"$WORK/back.py" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
base = [r for r in rows if r["phase"] == "baseline"][-1]
cool = [r for r in rows if r["phase"] == "cooldown"]
if not cool: sys.exit(1)
last = cool[-1]
def nonpg(n): return n["fds"] - n["fdKinds"].get("postgres", 0)
ok = last["keys"] is not None and last["keys"] == base["keys"] and all(nonpg(a) <= nonpg(b) for a, b in zip(last["nodes"], base["nodes"]))
sys.exit(0 if ok else 1)
PY
t_cool=$(date +%s)
sleep 35
while [ $(($(date +%s) - t_cool)) -lt "$COOLDOWN" ]; do
  python3 "$WORK/back.py" "$WORK/samples.ndjson" && break
  sleep 10
done
sleep 1
echo stop >"$WORK/phase"
wait "${PIDS[sampler]}" 2>/dev/null || true
unset 'PIDS[sampler]'
COOLED=$(($(date +%s) - t_cool))

# The binary's commit when its build left one next to it (/tmp/fcbin/COMMIT), else HEAD.
COMMIT=$(cat "$(dirname "$SERVER")/COMMIT" 2>/dev/null || git rev-parse --short HEAD)
CRASHED=""
for i in 0 1; do kill -0 "${PIDS[node$i]}" 2>/dev/null || CRASHED="$CRASHED node$((i + 1))"; done
for i in 0 1; do tail -n +"$((LOG_MARK[$i] + 1))" "$WORK/node$i.log" >"$WORK/node$i.during.log"; done

[ -f "$OUT" ] || cat >"$OUT" <<'EOF2'
# Soak results

Rows appended by `faults/soak.sh` (`MINUTES=30 faults/soak.sh`; `MINUTES=3` for a short
try): 2 nodes in cluster mode (private `redis-server`, a fresh Postgres database), loaded
directly by `faults/soak.mjs`: one driver per trip at 1 Hz (`driver:status` every 10 s),
two passengers per trip subscribed throughout (one on the driver's node, one on the
other), `SSE_STREAMS` steady SSE streams, and churn: `CHURN_PER_SEC` short-lived sockets a
second (subscribe/unsubscribe, `room:join`/`chat:typing`/`room:leave`,
`admin:subscribe`/`heartbeat`, each held 0.2–2.5 s, then disconnected) plus one short SSE
stream every 2 s. Sampled every 10 s. Shorter runs with one part of the load changed
(`STEADY=0`: churn only; `SSE_STREAMS=0`; `STATUS_EVERY_MS`: driver status interval,
10 s by default, 1000000000 = none) tell which part of the load grows what.

Columns: **when** (UTC) and **commit**; **settings**; **load**: steady sockets, accepted
locations per second, churn sockets made (and, in rows from the second 30-minute run on, the machine's
1-minute load average over the load, mean and max: the machine is shared, 2 cores); **churn achieved**: connects and disconnects per
second, min/avg over the 10 s windows; **RSS**: per node, median over the minute after
warm-up → median over the last minute of load (growth; criterion < 5 %), and the
least-squares slope of RSS over all samples after warm-up in MiB per hour (a plateau is
≈ 0; a steady climb shows here before it crosses 5 %); **open files**:
per node baseline/peak/after the cool-down (Postgres pool connections before → after,
which are not counted in the criterion: bounded by `--db-max-connections` and closed by
the pool's idle timeout); **Redis keys**: under the run's prefix, baseline/peak/after (and
seconds after the load until the count was back; every family has a TTL ≤ 150 s with
`HISTORY_WINDOW_MS=120000`, the connection and subscription slots go at disconnect);
**errors**: load errors (acks not ok or unanswered within 5 s, `connect_error`, steady
sockets or streams cut, churn sockets cut by the server) and node log lines at WARN/ERROR
or panics during the load and cool-down; **result**: pass when RSS growth < 5 % on each
node, open files (but the Postgres pool) and Redis keys back at the baseline, 0 errors and
no node exited.

| when | commit | settings | load | churn achieved | RSS node 1; node 2 | open files node 1; node 2 | Redis keys | errors | result |
|---|---|---|---|---|---|---|---|---|---|
EOF2
python3 - "$WORK" "$OUT" "$MINUTES" "$WARMUP_MIN" "$TRIPS" "$CHURN_PER_SEC" "$SSE_STREAMS" "$HISTORY_WINDOW_MS" \
  "${CRASHED:-none}" "$COMMIT" "$COOLED" <<'PY'
import json, os, sys, datetime, statistics
work, out, minutes, warm, trips, churn, sse, hist, crashed, commit, cooled = sys.argv[1:]
minutes, warm = int(minutes), int(warm)
rows = [json.loads(l) for l in open(f"{work}/samples.ndjson")]
load = json.loads(open(f"{work}/load.json").read() or "{}")
base = [r for r in rows if r["phase"] == "baseline"][-1]
lrows = [r for r in rows if r["phase"] == "load"]
crows = [r for r in rows if r["phase"] == "cooldown"]
after = crows[-1] if crows else lrows[-1]
t_load = lrows[0]["t"]
def rel(r): return r["t"] - t_load
def slope(i, warm):  # least squares over the samples after warm-up, MiB per hour
    pts = [(rel(r) / 3600, r["nodes"][i]["rssKb"] / 1024) for r in lrows if rel(r) >= warm * 60]
    if len(pts) < 3: return None
    mx = sum(x for x, _ in pts) / len(pts); my = sum(y for _, y in pts) / len(pts)
    return round(sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts), 1)
nodes = []
ok = True
reasons = []
for i in range(2):
    warm_rows = [r for r in lrows if warm * 60 <= rel(r) < warm * 60 + 60]
    end_rows = [r for r in lrows if rel(r) >= lrows[-1]["t"] - t_load - 60]
    w = statistics.median(r["nodes"][i]["rssKb"] for r in warm_rows) if warm_rows else None
    e = statistics.median(r["nodes"][i]["rssKb"] for r in end_rows)
    first_w = warm_rows[0]["nodes"][i]["rssKb"] if warm_rows else None
    growth = 100.0 * (e - w) / w if w else None
    peak_fds = max(r["nodes"][i]["fds"] for r in lrows)
    def nonpg(n): return n["fds"] - n["fdKinds"].get("postgres", 0)
    n = {
        "node": f"soak-{i+1}",
        "rssBaselineMiB": round(base["nodes"][i]["rssKb"] / 1024, 1),
        "rssWarmMiB": round(w / 1024, 1) if w else None,
        "rssAtWarmupSampleMiB": round(first_w / 1024, 1) if first_w else None,
        "rssEndMiB": round(e / 1024, 1),
        "rssEndSampleMiB": round(lrows[-1]["nodes"][i]["rssKb"] / 1024, 1),
        "rssMaxMiB": round(max(r["nodes"][i]["rssKb"] for r in lrows) / 1024, 1),
        "rssGrowthPct": round(growth, 2) if growth is not None else None,
        "rssSlopeMiBPerHour": slope(i, warm),
        "fds": {"baseline": base["nodes"][i]["fds"], "peak": peak_fds, "after": after["nodes"][i]["fds"]},
        "fdKinds": {"baseline": base["nodes"][i]["fdKinds"], "after": after["nodes"][i]["fdKinds"]},
        "connections": {"baseline": base["nodes"][i]["connections"],
                        "peak": max((r["nodes"][i]["connections"] or 0) for r in lrows),
                        "after": after["nodes"][i]["connections"]},
        "sseStreamsAfter": after["nodes"][i]["sseStreams"],
        "roomSubscriptions": {"baseline": base["nodes"][i].get("roomSubscriptions"),
                              "peak": max((r["nodes"][i].get("roomSubscriptions") or 0) for r in lrows),
                              "after": after["nodes"][i].get("roomSubscriptions")},
    }
    if growth is None or growth >= 5.0:
        ok = False; reasons.append(f"RSS of soak-{i+1} grew {growth} %")
    if nonpg(after["nodes"][i]) > nonpg(base["nodes"][i]):
        ok = False; reasons.append(f"open files of soak-{i+1} not back: {n['fdKinds']}")
    if after["nodes"][i]["connections"] not in (0, None) or after["nodes"][i]["sseStreams"] not in (0, None) \
            or after["nodes"][i].get("roomSubscriptions") not in (0, None):
        ok = False; reasons.append(f"soak-{i+1} still counts connections after the load")
    nodes.append(n)
keys = {"baseline": base["keys"], "peak": max((r["keys"] or 0) for r in lrows), "after": after["keys"],
        "peakFamilies": max(lrows, key=lambda r: r["keys"] or 0)["families"], "afterFamilies": after["families"]}
back_at = next((round(r["t"] - crows[0]["t"] + 10) for r in crows if r["keys"] == base["keys"]), None)
keys["backAfterS"] = back_at
if after["keys"] is None or base["keys"] is None or after["keys"] != base["keys"]:
    ok = False; reasons.append(f"Redis keys not back: {after['families']} vs {base['families']}")
logs = {}
for i in range(2):
    warn = err = panic = 0
    first = []
    for l in open(f"{work}/node{i}.during.log", errors="replace"):
        if "panicked" in l: panic += 1
        try:
            lv = json.loads(l).get("level", "")
        except Exception:
            lv = ""
        if lv in ("WARN", "ERROR"):
            warn += lv == "WARN"; err += lv == "ERROR"
            if len(first) < 3: first.append(l.strip()[:300])
    logs[f"soak-{i+1}"] = {"warn": warn, "error": err, "panics": panic, "first": first}
    if warn or err or panic:
        ok = False; reasons.append(f"soak-{i+1} logged {warn} WARN, {err} ERROR, {panic} panics")
errs = load.get("errorTotal")
if errs is None or errs > 0:
    ok = False; reasons.append(f"load errors: {json.dumps(load.get('errors'))}")
cps, dps = load.get("churnConnectsPerSec", {}), load.get("churnDisconnectsPerSec", {})
if crashed != "none":
    ok = False; reasons.append(f"exited: {crashed}")
summary = {"result": "pass" if ok else "FAIL", "reasons": reasons, "minutes": minutes, "warmupMin": warm,
           "settings": {"steady": os.environ.get("STEADY", "1") != "0", "trips": int(trips), "churnPerSec": float(churn), "sseStreams": int(sse), "historyWindowMs": int(hist)},
           "nodes": nodes, "redisKeys": keys, "cooldownS": int(cooled),
           "machineLoadAvg1m": {"mean": round(statistics.mean(r.get("loadavg", 0) for r in lrows), 1),
                                "max": max(r.get("loadavg", 0) for r in lrows)},
           "redisUsedMemoryMiB": {"baseline": round(base.get("redisUsedMemory", 0) / 2**20, 1),
                                  "after": round(after.get("redisUsedMemory", 0) / 2**20, 1)},
           "load": {k: load.get(k) for k in ("steadySockets", "locationsOk", "locationsPerSecAvg", "locationsDelivered",
                                              "statusOk", "statusDelivered", "churnStarted", "churnConnects",
                                              "churnDisconnects", "churnByKind", "churnConnectsPerSec",
                                              "churnDisconnectsPerSec", "sseSteady", "sseEvents", "sseEncodings", "sseChurnOpened")},
           "errors": load.get("errors"), "errorTotal": errs, "logs": logs, "crashed": crashed}
print(json.dumps(summary, indent=1))
fd = lambda n: f"{n['fds']['baseline']}/{n['fds']['peak']}/{n['fds']['after']}"
pgd = lambda n: f"{n['fdKinds']['baseline'].get('postgres',0)}→{n['fdKinds']['after'].get('postgres',0)}"
rss = lambda n: f"{n['rssWarmMiB']} → {n['rssEndMiB']} MiB ({n['rssGrowthPct']:+.2f} %, {n['rssSlopeMiBPerHour']:+} MiB/h)" if n["rssGrowthPct"] is not None else "n/a"
nerr = sum(v["warn"] + v["error"] + v["panics"] for v in logs.values())
row = (f"| {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}Z | {commit} | `{'' if summary['settings']['steady'] else 'STEADY=0 '}MINUTES={minutes} TRIPS={trips} CHURN_PER_SEC={churn} "
       f"SSE_STREAMS={sse} HISTORY_WINDOW_MS={hist}{'' if os.environ.get('STATUS_EVERY_MS', '10000') == '10000' else ' STATUS_EVERY_MS=' + os.environ['STATUS_EVERY_MS']}` (warm-up {warm} min) | {load.get('steadySockets')} steady sockets, "
       f"{load.get('locationsPerSecAvg')} locations/s, {load.get('churnConnects')} churn sockets; machine load avg "
       f"{summary['machineLoadAvg1m']['mean']} (max {summary['machineLoadAvg1m']['max']}) | "
       f"{cps.get('min')}/{cps.get('avg')} connects/s, {dps.get('min')}/{dps.get('avg')} disconnects/s | "
       f"{rss(nodes[0])}; {rss(nodes[1])} | {fd(nodes[0])} (pg {pgd(nodes[0])}); {fd(nodes[1])} (pg {pgd(nodes[1])}) | "
       f"{keys['baseline']}/{keys['peak']}/{keys['after']} (back after {back_at} s) | "
       f"{errs} load, {nerr} log WARN/ERROR/panic; exited: {crashed} | {'pass' if ok else 'FAIL'} |")
with open(out, "a") as f:
    f.write(row + "\n")
print(row, file=sys.stderr)
PY
if [ -n "${KEEP:-}" ]; then cp "$WORK/samples.ndjson" "$WORK/samples.keep.ndjson"; fi
