#!/usr/bin/env bash
# Start Debian's PostgreSQL and make a database for the test suite; prints its URL.
# Usage: scripts/postgres.sh [database-name]
set -euo pipefail
db="${1:-conveyor_test}"

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "installing postgresql" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | grep -q "^$version main"; then
  pg_createcluster "$version" main >&2
fi
if ! pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $4}' | grep -q online; then
  pg_ctlcluster "$version" main start >&2
fi
port=$(pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $3}')
runuser -u postgres -- psql -p "$port" -qtAc "SELECT 1 FROM pg_roles WHERE rolname='conveyor'" | grep -q 1 ||
  runuser -u postgres -- psql -p "$port" -qc "CREATE ROLE conveyor LOGIN PASSWORD 'conveyor'" >&2
runuser -u postgres -- psql -p "$port" -qc "DROP DATABASE IF EXISTS $db" >&2
runuser -u postgres -- psql -p "$port" -qc "CREATE DATABASE $db OWNER conveyor" >&2
echo "postgresql+psycopg://conveyor:conveyor@127.0.0.1:$port/$db"
