#!/usr/bin/env bash
# Checks the agent API against docs/agent-api.openapi.yaml with schemathesis
# (from PyPI, in a private virtualenv): every operation with generated valid
# and invalid requests, as a supervisor and as an agent, against a debug
# build of the daemon on a private Redis. Not part of scripts/test.sh (it
# downloads schemathesis and takes a few minutes); run it after changing the
# API or its OpenAPI file. Extra arguments go to `schemathesis run`.
# Exceptions schemathesis is told about are in scripts/schemathesis.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
venv="${SCHEMATHESIS_VENV:-$HOME/.cache/switchboard-schemathesis}"
redis_port=$((20000 + RANDOM % 10000))
http_port=$((redis_port + 1))
cleanup() {
  [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null || true
  redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

[ -x "$venv/bin/schemathesis" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q schemathesis; }
command -v redis-server >/dev/null || { echo "redis-server is needed (scripts/test.sh installs it)" >&2; exit 1; }
cargo build -q -p switchboard

redis-server --port "$redis_port" --save "" --appendonly no --dir "$work" --daemonize yes >/dev/null
cat > "$work/switchboard.toml" <<TOML
[redis]
url = "redis://127.0.0.1:$redis_port"
[http]
listen = "127.0.0.1:$http_port"
[agent_api]
supervisor_token = "supervisor-token-0123456789"
[[routing.queues]]
name = "general"
[[routing.agents]]
id = "olena"
capacity = { chat = 3, email = 5 }
token = "agent-token-olena-0123456789"
TOML
"${CARGO_TARGET_DIR:-target}/debug/switchboard" --config "$work/switchboard.toml" >"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$http_port/readyz" >/dev/null 2>&1 && break; sleep 0.2; done

status=0
# The agent first: the supervisor's run changes agents, olena's token too
# (schemathesis reuses ids it has seen in answers), after which every
# request with her old token would be a 401 and test nothing.
for token in agent-token-olena-0123456789 supervisor-token-0123456789; do
  "$venv/bin/schemathesis" --config-file scripts/schemathesis.toml run docs/agent-api.openapi.yaml \
    --url "http://127.0.0.1:$http_port/api/v1" \
    -H "Authorization: Bearer $token" --checks all --workers 2 "$@" || status=1
done
if grep -q panicked "$work/daemon.log"; then
  echo "The daemon panicked:" >&2
  grep -A20 panicked "$work/daemon.log" >&2
  status=1
fi
exit $status
