#!/usr/bin/env bash
# What an idle socket holds, by heap profile (issue 16; BENCHMARKS.md "What an idle socket
# holds"). Builds the node on the system allocator (the `jemalloc` feature off, in
# target/sysalloc, so that heaptrack sees every allocation), runs it under heaptrack on a
# private Redis and a fresh database, opens N idle sockets with the load tool, and kills the
# node with SIGKILL while it holds them: heaptrack's "leaked" is the heap at that moment.
# With two counts, each allocation site's difference divided by the difference in sockets
# is what one more socket costs there.
#
#   loadtest/heap.sh                 # N = 5000 and 10000, the table on stdout
#   HEAP_COUNTS="2000 4000" loadtest/heap.sh
#
# Needs heaptrack (apt-get install heaptrack), redis-server, Postgres at 127.0.0.1:5432 and
# python3; the load tool from `cargo build --release -p fleetcast-loadtest`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
COUNTS=(${HEAP_COUNTS:-5000 10000})
OUT=$(mktemp -d /tmp/fleetcast-heap.XXXXXX)
PORT=${HEAP_REDIS_PORT:-27310}
SECRET=heap-profile-secret-0123456789abcdef0123456789
command -v heaptrack >/dev/null || { echo "heaptrack not found (apt-get install heaptrack)" >&2; exit 1; }
cargo build --release --locked -p fleetcast --no-default-features --target-dir target/sysalloc >&2
cp target/sysalloc/release/fleetcast "$OUT/fcheap" # a short name: pgrep -x sees 15 characters
LT="$ROOT/target/release/fleetcast-loadtest"
[[ -x $LT ]] || cargo build --release --locked -p fleetcast-loadtest >&2

for n in "${COUNTS[@]}"; do
    redis-server --port "$PORT" --save '' --appendonly no --daemonize yes --logfile "$OUT/redis.log"
    db="heap_$(date +%s)_$n"
    createdb -h 127.0.0.1 -U postgres "$db"
    FLEETCAST_JWT_SECRET=$SECRET heaptrack -o "$OUT/held-$n" "$OUT/fcheap" --bind 127.0.0.1:3199 --node-id heap \
        --redis-url "redis://127.0.0.1:$PORT" --redis-prefix heap --database-url "postgres://postgres@127.0.0.1:5432/$db" \
        --log warn --conn-rate-per-sec 0 >"$OUT/node-$n.log" 2>&1 &
    for _ in $(seq 150); do curl -sf http://127.0.0.1:3199/readyz >/dev/null && break; sleep 0.2; done
    pid=$(pgrep -x fcheap | head -1)
    "$LT" idle --target ws://127.0.0.1:3199 --connections "$n" --ramp 500 --hold 600 --settle 5 \
        --secret "$SECRET" --json >"$OUT/idle-$n.json" 2>"$OUT/idle-$n.err" &
    lt=$!
    for _ in $(seq 600); do
        open=$(curl -s http://127.0.0.1:3199/metrics | awk '/^fleetcast_connections\{/ { print $2 }')
        [[ ${open%.*} -ge $n ]] 2>/dev/null && break
        sleep 0.5
    done
    sleep 5
    echo "N=$n: $(curl -s http://127.0.0.1:3199/metrics | grep '^fleetcast_connections{') (RSS $(awk '/VmRSS/ { print $2 }' "/proc/$pid/status") KiB)" >&2
    kill -9 "$pid"
    sleep 5
    kill "$lt" 2>/dev/null || true
    redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || true
    sleep 1
    dropdb -h 127.0.0.1 -U postgres "$db" || true
    heaptrack_print -f "$OUT"/held-"$n".*zst --print-peaks 0 --print-allocators 0 --print-temporary 0 \
        --print-leaks 0 -F "$OUT/held-$n.txt" --flamegraph-cost-type leaked >/dev/null
done

python3 - "$OUT/held-${COUNTS[0]}.txt" "$OUT/held-${COUNTS[1]}.txt" "$((COUNTS[1] - COUNTS[0]))" <<'PY'
# Per allocation site (the innermost frame that is not the allocator, a collection, a
# channel or tokio's spawn machinery): bytes held per additional socket.
import collections, re, sys
SKIP = set('''alloc.rs raw_vec.rs boxed.rs sync.rs unix.rs spec_from_elem.rs spec_from_iter.rs
spec_from_iter_nested.rs spec_extend.rs string.rs slice.rs map.rs mod.rs raw.rs set.rs entry.rs
rustc_entry.rs bucket.rs inner.rs bytes.rs bytes_mut.rs convert.rs borrow.rs str.rs fmt.rs
unsafe_cell.rs core.rs function.rs option.rs result.rs iterator.rs into_iter.rs vec.rs
extensions.rs poll_fn.rs future.rs select.rs harness.rs handle.rs list.rs spawn.rs current.rs
local.rs block.rs chan.rs watch.rs bounded.rs unbounded.rs bilock.rs split.rs interval.rs
registration.rs driver.rs poll_evented.rs stream.rs panic.rs panicking.rs unwind_safe.rs
atomic.rs cancellation_token.rs compat.rs value.rs request.rs args.rs de.rs'''.split()) | {''}
def load(path):
    sites = collections.Counter()
    for line in open(path):
        stack, _, n = line.rstrip('\n').rpartition(' ')
        try:
            n = int(n)
        except ValueError:
            continue
        frames = []
        for f in stack.split(';'):
            m = re.match(r'(.*?) \((.*?)\)$', f.strip())
            if m and m.group(2) not in SKIP:
                frames.append(f"{m.group(1).split(' ')[0][:48]} ({m.group(2)})")
        sites[' < '.join(reversed(frames[-3:])) or '?'] += n
    return sites
a, b, per = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
diff = collections.Counter({k: b[k] - a[k] for k in set(a) | set(b)})
print(f'{sum(diff.values()) / per:.0f} bytes of heap per additional idle socket')
for site, v in diff.most_common(30):
    if v / per >= 16:
        print(f'{v / per:8.0f}  {site}')
PY
echo "profiles: $OUT" >&2
