#!/usr/bin/env bash
# Runs schemathesis (pinned, from PyPI, in a virtual environment under
# target/) with every check against `handoff serve` started on an empty
# SQLite database with the bundled playbooks and the sandbox, through its
# own /openapi.json, with an API key. Any failure fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/schemathesis-venv
if ! "$venv/bin/schemathesis" --version >/dev/null 2>&1; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r .ci/schemathesis-requirements.txt
fi

cargo build --locked --quiet
work=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
key="hk_schemathesis_$RANDOM"
HANDOFF_DEMO_API_KEY="$key" target/debug/handoff serve \
  --listen "127.0.0.1:$port" --database "sqlite://$work/handoff.db" --rules rules \
  >"$work/serve.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
# One lead, so the routes under /v1/leads/{id} have something to find.
curl -fsS "http://127.0.0.1:$port/v1/leads" -H "Authorization: Bearer $key" \
  -H 'Content-Type: application/json' -d @examples/leads/aisha-api.json >/dev/null

"$venv/bin/schemathesis" --config-file .ci/schemathesis.toml run \
  "http://127.0.0.1:$port/openapi.json" \
  --checks all --header "Authorization: Bearer $key" \
  --seed "${SCHEMATHESIS_SEED:-20261203}" --max-examples 40 --workers 2 --no-color \
  --request-timeout 15
