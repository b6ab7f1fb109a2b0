#!/usr/bin/env bash
# Start or stop a throw-away S3-compatible server (moto's server mode) on 127.0.0.1 for the tests.
#   scripts/s3.sh start DIR   -> prints the endpoint URL to use (http://127.0.0.1:PORT)
#   scripts/s3.sh stop DIR
# The server keeps everything in memory; its pid and log live in DIR. The port is a free one
# (MODELYARD_TEST_S3_PORT picks it instead). Clients need any credentials and a region, e.g.
#   AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
#   AWS_ENDPOINT_URL_S3=<the printed URL>
set -euo pipefail
cmd=${1:?start|stop}
dir=$(realpath -m "${2:?state folder}")
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$here/.venv/bin/python}
bin=$(dirname "$py")/moto_server

case "$cmd" in
  start)
    if [ ! -x "$bin" ]; then
      echo "moto_server not found next to $py: pip install 'moto[server]' (the dev extra has it)" >&2
      exit 1
    fi
    rm -rf "$dir" && mkdir -p "$dir"
    port=${MODELYARD_TEST_S3_PORT:-$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')}
    nohup "$bin" -H 127.0.0.1 -p "$port" >"$dir/server.log" 2>&1 &
    echo $! >"$dir/moto.pid"
    echo "$port" >"$dir/port"
    url="http://127.0.0.1:$port"
    for _ in $(seq 1 150); do
      if "$py" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/moto-api/', timeout=1)" "$url" >/dev/null 2>&1; then
        echo "$url"
        exit 0
      fi
      if ! kill -0 "$(cat "$dir/moto.pid")" 2>/dev/null; then
        echo "moto_server exited at start-up; its log:" >&2
        cat "$dir/server.log" >&2
        exit 1
      fi
      sleep 0.2
    done
    echo "moto_server did not answer on $url within 30 s; its log:" >&2
    cat "$dir/server.log" >&2
    kill "$(cat "$dir/moto.pid")" 2>/dev/null || true
    exit 1
    ;;
  stop)
    if [ -f "$dir/moto.pid" ]; then
      pid=$(cat "$dir/moto.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
    ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
