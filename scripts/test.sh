#!/usr/bin/env bash
# The whole suite, with the services it needs started here and stopped afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
services=$(mktemp -d /tmp/modelyard-services.XXXXXX)
chmod 755 "$services"
cleanup() {
  scripts/postgres.sh stop "$services/pg" || true
  scripts/redis.sh stop "$services/redis" || true
  scripts/s3.sh stop "$services/s3" || true
  rm -rf "$services"
}
trap cleanup EXIT
MODELYARD_TEST_PG_URL=$(scripts/postgres.sh start "$services/pg")
export MODELYARD_TEST_PG_URL
MODELYARD_TEST_REDIS_URL=$(scripts/redis.sh start "$services/redis")
export MODELYARD_TEST_REDIS_URL
MODELYARD_TEST_S3_ENDPOINT=$(scripts/s3.sh start "$services/s3")
export MODELYARD_TEST_S3_ENDPOINT
MODELYARD_TEST_CHROMIUM=$(scripts/chromium.sh)
export MODELYARD_TEST_CHROMIUM
export MODELYARD_TEST_REQUIRE_SERVICES=1
"$py" -m pytest "$@"
