#!/usr/bin/env bash
# Start or stop a throw-away Redis server on 127.0.0.1 for the test suite.
#   scripts/redis.sh start DIR   -> prints the URL to use (redis://127.0.0.1:PORT/0)
#   scripts/redis.sh stop DIR
# Installs Redis from Debian's packages when no server binary is found. Nothing is persisted.
set -euo pipefail
cmd=${1:?start|stop}
dir=$(realpath -m "${2:?data folder}")
port=${MODELYARD_TEST_REDIS_PORT:-63799}

case "$cmd" in
  start)
    if ! command -v redis-server >/dev/null; then
      echo "Redis not found: installing it from Debian's packages" >&2
      if [ "$(id -u)" = 0 ]; then
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >&2
      else
        sudo apt-get update -qq >&2 && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >&2
      fi
    fi
    rm -rf "$dir" && mkdir -p "$dir"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --save '' --appendonly no \
      --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/server.log" >/dev/null
    for _ in $(seq 1 100); do
      redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && break
      sleep 0.1
    done
    redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null
    echo "redis://127.0.0.1:$port/0"
    ;;
  stop)
    if [ -f "$dir/redis.pid" ]; then
      redis-cli -h 127.0.0.1 -p "$port" shutdown nosave >/dev/null 2>&1 || kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
    fi
    rm -rf "$dir"
    ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
