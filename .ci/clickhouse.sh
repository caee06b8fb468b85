#!/usr/bin/env bash
# Makes sure a ClickHouse server answers on 127.0.0.1:8123: installs Debian's clickhouse-server
# and clickhouse-client if absent, starts the server in the background without systemd, waits
# (at most 60 s) for /ping, prints the version. Idempotent: an already running server is fine.
set -euo pipefail

URL="${CLICKHOUSE_HTTP:-http://127.0.0.1:8123}"
CONFIG=/etc/clickhouse-server/config.xml

ping_ok() {
  if command -v curl >/dev/null 2>&1; then
    [ "$(curl -s --max-time 2 "$URL/ping" 2>/dev/null || true)" = "Ok." ]
  else
    clickhouse-client --query "SELECT 1" >/dev/null 2>&1
  fi
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v clickhouse-server >/dev/null 2>&1 || ! command -v clickhouse-client >/dev/null 2>&1; then
  echo "clickhouse: installing clickhouse-server clickhouse-client from Debian" >&2
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  # policy-rc.d may refuse to start the service at install time; we start it ourselves below.
  as_root apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
fi

if ping_ok; then
  echo "clickhouse: already running at $URL" >&2
else
  echo "clickhouse: starting server" >&2
  as_root mkdir -p /var/lib/clickhouse /var/log/clickhouse-server
  as_root chown -R clickhouse:clickhouse /var/lib/clickhouse /var/log/clickhouse-server
  if command -v start-stop-daemon >/dev/null 2>&1; then
    as_root start-stop-daemon --start --quiet --chuid clickhouse:clickhouse --background \
      --exec /usr/sbin/clickhouse-server -- --config="$CONFIG" || true
  else
    as_root setsid runuser -u clickhouse -- /usr/sbin/clickhouse-server --config="$CONFIG" \
      >/var/log/clickhouse-server/stdout.log 2>&1 < /dev/null &
  fi
  for _ in $(seq 1 60); do
    ping_ok && break
    sleep 1
  done
  if ! ping_ok; then
    echo "clickhouse: server did not answer $URL/ping within 60 s; last errors:" >&2
    tail -n 20 /var/log/clickhouse-server/clickhouse-server.err.log >&2 || true
    exit 1
  fi
fi

echo "clickhouse: version $(clickhouse-client --query 'SELECT version()')"
