#!/usr/bin/env bash
# The one test command (README "Run the tests"): provisions what the tests need on a fresh
# machine of our kind — Redis on 127.0.0.1:6379, PostgreSQL on 127.0.0.1:5432 with trust
# auth, Node.js packages for the interop tests, Chromium for the pages' browser tests,
# Prometheus for the monitoring tests —
# then runs every test of the workspace.
# Services that already run are left alone; nothing shared is stopped or flushed.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '== %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }
apt_ready=0
apt_install() {
  if [ "$apt_ready" = 0 ]; then apt-get update -qq; apt_ready=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Redis: the tests use it with unique key prefixes, and start private servers for faults.
have redis-server || { log "installing redis-server"; apt_install redis-server; }
if ! port_open 6379; then
  log "starting redis on 6379"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi

# PostgreSQL: each cluster test creates and drops its own database.
if ! port_open 5432; then
  if ! have pg_ctlcluster; then log "installing postgresql"; apt_install postgresql; fi
  log "starting postgresql"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
for _ in $(seq 1 50); do port_open 5432 && port_open 6379 && break; sleep 0.2; done
port_open 5432 || { echo "postgres is not reachable on 127.0.0.1:5432" >&2; exit 1; }
# The tests connect as postgres without a password (trust on loopback, as on our machines).
if have psql && ! psql -h 127.0.0.1 -U postgres -d postgres -w -c 'SELECT 1' >/dev/null 2>&1; then
  hba=$(ls /etc/postgresql/*/main/pg_hba.conf 2>/dev/null | head -n1)
  if [ -n "$hba" ]; then
    log "setting trust auth for loopback in $hba"
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main reload || true
  fi
fi
port_open 6379 || { echo "redis is not reachable on 127.0.0.1:6379" >&2; exit 1; }

# Node.js packages for the official-client interop tests.
have node || { log "installing nodejs"; apt_install nodejs npm; }
# Debian's Chromium for the pages' browser tests (playwright-core drives it; it never
# downloads a browser of its own).
have chromium || { log "installing chromium"; apt_install chromium; }
# Prometheus and promtool for the monitoring tests (deploy/prometheus).
have prometheus && have promtool || { log "installing prometheus"; apt_install prometheus; }
log "npm ci (tests/js)"
npm ci --prefix tests/js --no-audit --no-fund --silent

log "cargo test --workspace"
# Tests share two cores with the nodes they start; a few threads keep timings honest.
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-4}"
