#!/usr/bin/env bash
# A private Redis Cluster for tests and benchmarks: three primaries and three replicas from
# `redis-server --cluster-enabled yes`, joined with `redis-cli --cluster create
# --cluster-replicas 1`, on six consecutive ports from BASE, in DIR; ready once every replica
# is in sync (`--cluster-node-timeout 2000`: a replica takes over a failed primary within
# about 3 s). Never touches another Redis; stopped by the PIDs it wrote.
#
#   scripts/redis-cluster.sh start BASE DIR   # prints the seed URL: redis-cluster://127.0.0.1:BASE?node=…
#   scripts/redis-cluster.sh stop DIR         # SIGTERM to each of its redis-servers (by PID file)
#   WATCH=pid scripts/redis-cluster.sh start … # also stop the cluster once process `pid` is gone
#   REPLICAS=0 scripts/redis-cluster.sh start … # three primaries only, on BASE..BASE+2
#   NODE_TIMEOUT=15000 scripts/redis-cluster.sh start … # cluster-node-timeout in ms (default 2000,
#                                                # for fast failover tests; Redis's own default
#                                                # is 15000, which benchmarks use)
set -euo pipefail
cmd=${1:?start|stop}
case "$cmd" in
start)
  base=${2:?BASE port}
  dir=${3:?DIR}
  mkdir -p "$dir"
  replicas=${REPLICAS:-1}
  [ "$replicas" = 0 ] || [ "$replicas" = 1 ] || { echo "REPLICAS is 0 or 1" >&2; exit 2; }
  ports=()
  for i in $(seq 0 $((replicas == 1 ? 5 : 2))); do
    p=$((base + i))
    ports+=("$p")
    mkdir -p "$dir/$p"
    (cd "$dir/$p" && redis-server --port "$p" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file nodes.conf --cluster-node-timeout "${NODE_TIMEOUT:-2000}" --save '' --appendonly no \
      --repl-diskless-sync yes --repl-diskless-sync-delay 0 --cluster-replica-validity-factor 0 \
      --daemonize yes --logfile log --pidfile "$dir/$p/pid")
  done
  for p in "${ports[@]}"; do
    for _ in $(seq 1 100); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.05; done
  done
  redis-cli --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") --cluster-replicas "$replicas" --cluster-yes >"$dir/create.log" 2>&1 \
    || { cat "$dir/create.log" >&2; exit 1; }
  # Ready when every node agrees the cluster is ok and the replicas are attached.
  for _ in $(seq 1 200); do
    ok=1
    for p in "${ports[@]}"; do
      redis-cli -p "$p" cluster info 2>/dev/null | grep -q 'cluster_state:ok' || ok=0
    done
    [ "$(redis-cli -p "$base" cluster nodes | grep -c slave)" = $((replicas * 3)) ] || ok=0
    # Every replica in sync with its primary, so that it can take over at once.
    for p in "${ports[@]}"; do
      if redis-cli -p "$p" info replication 2>/dev/null | grep -q 'role:slave'; then
        redis-cli -p "$p" info replication | grep -q 'master_link_status:up' || ok=0
      fi
    done
    [ $ok = 1 ] && break
    sleep 0.1
  done
  [ $ok = 1 ] || { echo "cluster not ok" >&2; exit 1; }
  if [ -n "${WATCH:-}" ]; then
    (trap '' HUP; while kill -0 "$WATCH" 2>/dev/null; do sleep 1; done; "$0" stop "$dir") >/dev/null 2>&1 &
  fi
  nodes=$(printf '&node=127.0.0.1:%s' "${ports[@]:1:2}")
  echo "redis-cluster://127.0.0.1:${base}?${nodes#&}"
  ;;
stop)
  dir=${2:?DIR}
  for f in "$dir"/*/pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
  ;;
*)
  echo "usage: $0 start BASE DIR | stop DIR" >&2
  exit 2
  ;;
esac
